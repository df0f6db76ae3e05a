// A small interpreter of nft::Plan, for tests: walks the base chain of a
// hook the way the kernel does (first matching rule, jump/goto/return,
// accept/drop final) over the plan's own sets. It lets the plan compiler be
// checked against the reference evaluator without a kernel; the kernel tests
// then check that the kernel behaves like the plan.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>

#include "tierwall/dataplane/nft/plan.h"

namespace tierwall::testkit {

struct PlanPacket {
  dataplane::nft::Hook hook = dataplane::nft::Hook::Forward;
  IpAddress src;
  IpAddress dst;
  std::uint8_t protocol = 0;
  std::uint16_t port = 0;  // dport or ICMP type
  bool established = false;
};

struct PlanVerdict {
  bool accept = true;
  std::string counter;  // last named counter hit ("c16"), empty when none
  std::string log;      // last log prefix, empty when none
  std::optional<std::uint32_t> ct_mark;
};

class PlanInterpreter {
 public:
  explicit PlanInterpreter(const dataplane::nft::Plan& plan) : plan_(plan) {
    for (const auto& s : plan.sets) sets_.emplace(s.name, &s);
  }

  PlanVerdict run(const PlanPacket& p) const {
    using dataplane::nft::Hook;
    const char* base = p.hook == Hook::Forward ? "forward"
                       : p.hook == Hook::Input ? "input"
                                               : "output";
    PlanVerdict v;
    auto r = chain(base, p, v, 0);
    v.accept = r.value_or(true);  // base chains have policy accept
    return v;
  }

 private:
  bool in_set(const std::string& name, const IpAddress& a) const {
    auto it = sets_.find(name);
    if (it == sets_.end()) throw std::logic_error("missing set " + name);
    const auto& s = *it->second;
    if (s.family != a.family) return false;
    for (const auto& c : s.prefixes) {
      if (c.contains(a)) return true;
    }
    for (const auto& x : s.addresses) {
      if (x == a) return true;
    }
    return false;
  }

  bool matches(const dataplane::nft::Match& m, const PlanPacket& p) const {
    using K = dataplane::nft::Match::Kind;
    const IpAddress& a = m.dir == dataplane::nft::Dir::Src ? p.src : p.dst;
    switch (m.kind) {
      case K::NfProto:
        return p.src.family == m.family;
      case K::L4Proto:
        return p.protocol == m.proto;
      case K::InSet:
        return a.family == m.family && in_set(m.set, a);
      case K::NotInSet:
        return a.family == m.family && !in_set(m.set, a);
      case K::DportRange:
      case K::IcmpTypeRange:
        return p.port >= m.lo && p.port <= m.hi;
      case K::CtStateEstRel:
        return p.established;
      case K::IcmpV6Nd:
        return p.protocol == 58 && p.port >= 133 && p.port <= 137;
    }
    return false;
  }

  // nullopt: fell off the end (return); true/false: accept/drop.
  std::optional<bool> chain(const std::string& name, const PlanPacket& p, PlanVerdict& v,
                            int depth) const {
    if (depth > 16) throw std::logic_error("chain loop");
    for (const auto& r : plan_.rules) {
      if (r.chain != name) continue;
      bool all = true;
      for (const auto& m : r.matches) {
        if (!matches(m, p)) {
          all = false;
          break;
        }
      }
      if (!all) continue;
      for (const auto& a : r.actions) {
        using A = dataplane::nft::Action::Kind;
        switch (a.kind) {
          case A::Counter:
            v.counter = a.name;
            break;
          case A::Log:
            v.log = a.name;
            break;
          case A::CtMark:
            v.ct_mark = a.value;
            break;
          case A::Accept:
            return true;
          case A::Drop:
            return false;
          case A::Jump: {
            auto res = chain(a.name, p, v, depth + 1);
            if (res) return res;
            break;
          }
          case A::Goto:
            return chain(a.name, p, v, depth + 1);
        }
      }
    }
    return std::nullopt;
  }

  const dataplane::nft::Plan& plan_;
  std::map<std::string, const dataplane::nft::SetDef*> sets_;
};

}  // namespace tierwall::testkit
