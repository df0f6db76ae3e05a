// A small interpreter of nft::Plan, for tests: walks the base chain of a
// hook the way the kernel does (first matching rule, jump/goto/return,
// accept/drop final) over the plan's own sets. It lets the plan compiler be
// checked against the reference evaluator without a kernel; the kernel tests
// then check that the kernel behaves like the plan.
#pragma once

#include <algorithm>
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
  std::string iif = "eth0";  // input interface (forward, input)
  std::string oif = "eth1";  // output interface (forward, output)
  std::uint32_t mark = 0;    // meta mark on arrival
};

struct PlanVerdict {
  bool accept = true;
  std::string counter;  // last named counter hit ("c16"), empty when none
  std::string log;      // last log prefix, empty when none
  std::optional<std::uint32_t> ct_mark;
  std::uint32_t mark = 0;  // meta mark when the base chain ended
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
    PlanPacket packet = p;
    auto r = chain(base, packet, v, 0);
    v.accept = r.value_or(true);  // base chains have policy accept
    v.mark = packet.mark;
    return v;
  }

 private:
  bool in_set(const std::string& name, const IpAddress& a) const {
    auto it = sets_.find(name);
    if (it == sets_.end()) throw std::logic_error("missing set " + name);
    const auto& s = *it->second;
    if (s.key != dataplane::nft::SetDef::Key::Address || s.family != a.family) return false;
    for (const auto& c : s.prefixes) {
      if (c.contains(a)) return true;
    }
    for (const auto& x : s.addresses) {
      if (x == a) return true;
    }
    return false;
  }

  bool has_ifname(const std::string& name, const std::string& ifname) const {
    auto it = sets_.find(name);
    if (it == sets_.end()) throw std::logic_error("missing set " + name);
    const auto& n = it->second->ifnames;
    return std::find(n.begin(), n.end(), ifname) != n.end();
  }

  std::optional<std::uint32_t> map_lookup(const std::string& name, const IpAddress& a) const {
    auto it = sets_.find(name);
    if (it == sets_.end()) throw std::logic_error("missing map " + name);
    const auto& s = *it->second;
    for (std::size_t i = 0; i < s.addresses.size(); ++i) {
      if (s.addresses[i] == a) return s.marks.at(i);
    }
    return std::nullopt;
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
      case K::IifInSet:
        return has_ifname(m.set, p.iif);
      case K::IifNotInSet:
        return !has_ifname(m.set, p.iif);
      case K::OifInSet:
        return has_ifname(m.set, p.oif);
      case K::TagRange:
        return (p.mark & 0xffffU) >= m.lo && (p.mark & 0xffffU) <= m.hi;
      case K::TagNot:
        return (p.mark & 0xffffU) != m.lo;
    }
    return false;
  }

  // nullopt: fell off the end (return); true/false: accept/drop.
  std::optional<bool> chain(const std::string& name, PlanPacket& p, PlanVerdict& v,
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
        bool stop = false;  // a map miss ends the rule
        switch (a.kind) {
          case A::SetMark:
            p.mark = a.value;
            break;
          case A::SetMarkMap:
            if (p.src.family != a.family) {
              stop = true;
            } else if (auto value = map_lookup(a.name, p.src)) {
              p.mark = *value;
            } else {
              stop = true;
            }
            break;
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
        if (stop) break;
      }
    }
    return std::nullopt;
  }

  const dataplane::nft::Plan& plan_;
  std::map<std::string, const dataplane::nft::SetDef*> sets_;
};

}  // namespace tierwall::testkit
