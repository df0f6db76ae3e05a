#include "tierwall/dataplane/nft/plan.h"

#include <algorithm>
#include <charconv>
#include <set>
#include <sstream>

#include "tierwall/dataplane/nft/flow_events.h"

namespace tierwall::dataplane::nft {

namespace {

using Fam = IpAddress::Family;
using Alt = std::vector<Match>;  // a conjunction of matches
constexpr Fam kFamilies[] = {Fam::V4, Fam::V6};

std::string fam_suffix(Fam f) { return f == Fam::V4 ? "4" : "6"; }

Match in_set(Fam f, Dir d, std::string set) {
  Match m;
  m.kind = Match::Kind::InSet;
  m.family = f;
  m.dir = d;
  m.set = std::move(set);
  return m;
}

Match not_in_set(Fam f, Dir d, std::string set) {
  Match m = in_set(f, d, std::move(set));
  m.kind = Match::Kind::NotInSet;
  return m;
}

Match simple(Match::Kind kind, Fam f = Fam::V4, std::uint8_t proto = 0, std::uint16_t lo = 0,
             std::uint16_t hi = 0) {
  Match m;
  m.kind = kind;
  m.family = f;
  m.proto = proto;
  m.lo = lo;
  m.hi = hi;
  return m;
}

Action act(Action::Kind kind, std::string name = {}, std::uint32_t value = 0) {
  return Action{kind, std::move(name), value};
}

Match ifname(Match::Kind kind, std::string set) {
  Match m;
  m.kind = kind;
  m.set = std::move(set);
  return m;
}

// meta mark & 0xffff in lo..hi (TagRange) or != lo (TagNot).
Match tag(Match::Kind kind, std::uint16_t lo, std::uint16_t hi) {
  Match m;
  m.kind = kind;
  m.lo = lo;
  m.hi = hi;
  return m;
}
Match tag_is(std::uint16_t t) { return tag(Match::Kind::TagRange, t, t); }

constexpr const char* kOverlaySet = "ovl";
constexpr const char* kTagChain = "ovl_tag";
constexpr const char* kCheckChain = "ovl_check";
constexpr const char* kUntrustedCounter = "ovl_untrusted";
constexpr const char* kSpoofCounter = "ovl_spoof";
constexpr const char* kBadTagCounter = "ovl_badtag";

std::vector<Alt> product(const std::vector<Alt>& a, const std::vector<Alt>& b) {
  std::vector<Alt> out;
  for (const auto& x : a) {
    for (const auto& y : b) {
      Alt c = x;
      c.insert(c.end(), y.begin(), y.end());
      out.push_back(std::move(c));
    }
  }
  return out;
}

// Drops prefixes covered by another one (nft interval sets reject overlaps).
std::vector<Cidr> normalize(std::vector<Cidr> prefixes) {
  std::sort(prefixes.begin(), prefixes.end(), [](const Cidr& a, const Cidr& b) {
    return a.prefix != b.prefix ? a.prefix < b.prefix : a.base < b.base;
  });
  std::vector<Cidr> out;
  for (const auto& c : prefixes) {
    const bool covered =
        std::any_of(out.begin(), out.end(), [&](const Cidr& o) { return o.covers(c); });
    if (!covered) out.push_back(c);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The context of a decision chain: which hook, which family. In `input` the
// responder is the host; in `output` the initiator is the host; in `forward`
// both sides are known by address only.
struct Ctx {
  Hook hook;
  Fam fam;
  std::string chain;
  std::string staged_chain;
  bool has_staged = false;
  // The source is known only by its GBP tag (an unknown address that came
  // in through an overlay device with a tag naming a tier).
  bool tagged = false;
};

class Builder {
 public:
  Builder(const RuleSet& rules, const Options& options)
      : policy_(*rules.policy), table_(*rules.endpoints), options_(options) {
    bool any_audit = false;
    bool all_audit = true;
    for (const auto& t : policy_.tiers) {
      any_audit = any_audit || t.mode == Mode::Audit;
      all_audit = all_audit && t.mode == Mode::Audit;
    }
    all_audit_ = all_audit;
    none_audit_ = !any_audit;
    quarantine_audit_ = policy_.tiers[kQuarantineTier].mode == Mode::Audit;
  }

  Plan build() {
    plan_.table = options_.table;
    plan_.generation = policy_.generation;
    plan_.digest = policy_.digest;
    add_sets();
    add_counters();
    add_base_chains();
    for (Hook hook : {Hook::Forward, Hook::Input, Hook::Output}) {
      for (Fam f : kFamilies) add_decision_chain(hook, f, false);
    }
    if (overlay()) {
      add_overlay_chains();
      for (Hook hook : {Hook::Forward, Hook::Input}) {
        for (Fam f : kFamilies) add_decision_chain(hook, f, true);
      }
    }
    return std::move(plan_);
  }

 private:
  [[nodiscard]] bool overlay() const { return options_.overlay.enabled(); }
  // Tags name tiers 1..N; anything above is no tier of this policy.
  [[nodiscard]] std::uint16_t last_tag() const {
    return gbp_tag(static_cast<TierId>(policy_.tiers.size() - 1));
  }

  void add_set(std::string name, Fam f, bool interval) {
    SetDef s;
    s.name = std::move(name);
    s.family = f;
    s.interval = interval;
    plan_.sets.push_back(std::move(s));
  }
  SetDef& set(const std::string& name) {
    for (auto& s : plan_.sets) {
      if (s.name == name) return s;
    }
    throw std::logic_error("unknown set " + name);
  }

  void add_sets() {
    for (Fam f : kFamilies) {
      add_set(set_name("ep", f), f, false);
      add_set(set_name("cidr", f), f, true);
      add_set(set_name("node", f), f, false);
      add_set(set_name("aud", f), f, false);
      for (std::size_t t = 0; t < policy_.tiers.size(); ++t) {
        add_set(tier_set(static_cast<TierId>(t), f), f, false);
      }
      for (std::size_t s = 0; s < policy_.selectors.size(); ++s) {
        add_set(selector_set(static_cast<SelectorId>(s), f), f, false);
      }
      std::vector<Cidr> cidrs;
      for (const auto& c : table_.container_cidrs()) {
        if (c.base.family == f) cidrs.push_back(c);
      }
      set(set_name("cidr", f)).prefixes = normalize(std::move(cidrs));
      for (const auto& a : table_.node_addresses()) {
        if (a.family == f) set(set_name("node", f)).addresses.push_back(a);
      }
      if (overlay()) {
        add_set(set_name("peer", f), f, false);
        for (const auto& a : options_.overlay.peers) {
          if (a.family == f) set(set_name("peer", f)).addresses.push_back(a);
        }
        add_set(set_name("tag", f), f, false);
        set(set_name("tag", f)).mark_map = true;
      }
    }
    if (overlay()) {
      add_set(kOverlaySet, Fam::V4, false);
      SetDef& devices = set(kOverlaySet);
      devices.key = SetDef::Key::Ifname;
      devices.ifnames = options_.overlay.devices;
      std::sort(devices.ifnames.begin(), devices.ifnames.end());
      devices.ifnames.erase(std::unique(devices.ifnames.begin(), devices.ifnames.end()),
                            devices.ifnames.end());
    }
    // Endpoint elements, in a deterministic order.
    std::vector<std::pair<IpAddress, EndpointId>> addresses;
    table_.for_each_address([&](const IpAddress& a, EndpointId id, const EndpointEntry&) {
      addresses.emplace_back(a, id);
    });
    std::sort(addresses.begin(), addresses.end());
    std::unordered_map<std::string, SetDef*> index;
    for (auto& s : plan_.sets) index.emplace(s.name, &s);
    for (const auto& [address, id] : addresses) {
      for (const auto& e : elements_of(policy_, table_, id, address, overlay())) {
        SetDef* s = index.at(e.set);
        s->addresses.push_back(e.address);
        if (e.mark) s->marks.push_back(*e.mark);
      }
    }
  }

  void add_counters() {
    plan_.counters.push_back(counter_name(kRuleIntraTier));
    plan_.counters.push_back(counter_name(kRuleDefaultDeny));
    for (const auto* list : {&policy_.denies, &policy_.flows}) {
      for (const auto& r : *list) plan_.counters.push_back(counter_name(r.id));
    }
    if (overlay()) {
      for (const char* c : {kUntrustedCounter, kSpoofCounter, kBadTagCounter})
        plan_.counters.emplace_back(c);
    }
  }

  void add_base_chains() {
    const std::pair<Hook, const char*> hooks[] = {
        {Hook::Forward, "forward"}, {Hook::Input, "input"}, {Hook::Output, "output"}};
    for (const auto& [hook, name] : hooks) {
      plan_.chains.push_back(ChainDef{name, hook, options_.priority});
      if (overlay()) add_overlay_before_fast_path(hook, name);
      // Established traffic is decided once, by conntrack.
      emit(name, {simple(Match::Kind::CtStateEstRel)}, {act(Action::Kind::Accept)}, 0);
      // IPv6 neighbour discovery is link infrastructure, like ARP.
      emit(name,
           {simple(Match::Kind::NfProto, Fam::V6), simple(Match::Kind::L4Proto, Fam::V6, 58),
            simple(Match::Kind::IcmpV6Nd, Fam::V6)},
           {act(Action::Kind::Accept)}, 0);
      if (overlay()) add_overlay_after_fast_path(hook, name);
      // Scope: only traffic with a container (known or not) on the policed side.
      for (Fam f : kFamilies) {
        const std::string target = decision_chain(hook, f);
        std::vector<Dir> dirs;
        if (hook == Hook::Forward) dirs = {Dir::Src, Dir::Dst};
        if (hook == Hook::Input) dirs = {Dir::Src};
        if (hook == Hook::Output) dirs = {Dir::Dst};
        for (Dir d : dirs) {
          for (const char* kind : {"ep", "cidr"}) {
            emit(name, {simple(Match::Kind::NfProto, f), in_set(f, d, set_name(kind, f))},
                 {act(Action::Kind::Goto, target)}, 0);
          }
        }
      }
    }
  }

  static std::string decision_chain(Hook hook, Fam f, bool tagged = false) {
    const char* base = hook == Hook::Forward ? "fwd" : hook == Hook::Input ? "in" : "out";
    return base + fam_suffix(f) + (tagged ? "g" : "");
  }

  // Before conntrack's fast path, for every packet: only VXLAN from trusted
  // peers reaches the node, and every packet that leaves through an overlay
  // device carries the mark tierwall gives it (a local sender cannot choose
  // its tag, also not on an established connection).
  void add_overlay_before_fast_path(Hook hook, const std::string& chain) {
    const std::string ovl = kOverlaySet;
    if (hook == Hook::Input) {
      for (Fam f : kFamilies) {
        emit(chain,
             {simple(Match::Kind::NfProto, f), simple(Match::Kind::L4Proto, f, proto::kUdp),
              simple(Match::Kind::DportRange, f, proto::kUdp, options_.overlay.port,
                     options_.overlay.port),
              not_in_set(f, Dir::Src, set_name("peer", f))},
             {act(Action::Kind::Counter, kUntrustedCounter), act(Action::Kind::Drop)}, 0);
      }
    }
    if (hook == Hook::Forward) {
      emit(chain, {ifname(Match::Kind::IifNotInSet, ovl), ifname(Match::Kind::OifInSet, ovl)},
           {act(Action::Kind::Jump, kTagChain)}, 0);
    }
    if (hook == Hook::Output) {
      // The node's own packets cross the overlay untagged.
      emit(chain, {ifname(Match::Kind::OifInSet, ovl)}, {act(Action::Kind::SetMark, {}, 0)}, 0);
    }
  }

  // After the fast path (first packets only): sources from an overlay
  // device. A known address must carry its own tier's tag; an unknown one
  // with a tag is decided by the tag (the tagged chains); an unknown one
  // without a tag falls through to the usual scope (world or quarantine).
  // Packets leaving through an overlay device towards a container address
  // this node does not know are the receiving node's to decide.
  void add_overlay_after_fast_path(Hook hook, const std::string& chain) {
    const std::string ovl = kOverlaySet;
    if (hook != Hook::Output) {
      emit(chain, {ifname(Match::Kind::IifInSet, ovl)}, {act(Action::Kind::Jump, kCheckChain)}, 0);
      for (Fam f : kFamilies) {
        emit(
            chain,
            {ifname(Match::Kind::IifInSet, ovl), simple(Match::Kind::NfProto, f),
             not_in_set(f, Dir::Src, set_name("ep", f)), tag(Match::Kind::TagRange, 1, last_tag())},
            {act(Action::Kind::Goto, decision_chain(hook, f, true))}, 0);
      }
    }
    if (hook != Hook::Input) {
      for (Fam f : kFamilies) {
        Alt m;
        if (hook == Hook::Forward) m.push_back(ifname(Match::Kind::IifNotInSet, ovl));
        m.push_back(ifname(Match::Kind::OifInSet, ovl));
        m.push_back(simple(Match::Kind::NfProto, f));
        m.push_back(in_set(f, Dir::Dst, set_name("cidr", f)));
        m.push_back(not_in_set(f, Dir::Dst, set_name("ep", f)));
        emit(chain, std::move(m), {act(Action::Kind::Accept)}, 0);
      }
    }
  }

  void add_overlay_chains() {
    // Egress tagging: untagged, then quarantine for container-network
    // sources, then the endpoint's own tier (a map miss leaves the mark).
    plan_.chains.push_back(ChainDef{kTagChain, std::nullopt, 0});
    emit(kTagChain, {}, {act(Action::Kind::SetMark, {}, 0)}, 0);
    for (Fam f : kFamilies) {
      emit(kTagChain, {simple(Match::Kind::NfProto, f), in_set(f, Dir::Src, set_name("cidr", f))},
           {act(Action::Kind::SetMark, {}, gbp_tag(kQuarantineTier))}, 0);
      Action map = act(Action::Kind::SetMarkMap, set_name("tag", f));
      map.family = f;
      emit(kTagChain, {simple(Match::Kind::NfProto, f)}, {map}, 0);
    }
    // Ingress checks: a known address with another tag (or none) is a
    // spoof; a tag naming no tier is invalid.
    plan_.chains.push_back(ChainDef{kCheckChain, std::nullopt, 0});
    for (Fam f : kFamilies) {
      for (std::size_t t = 0; t < policy_.tiers.size(); ++t) {
        const auto tier = static_cast<TierId>(t);
        emit(kCheckChain,
             {simple(Match::Kind::NfProto, f), in_set(f, Dir::Src, tier_set(tier, f)),
              tag(Match::Kind::TagNot, gbp_tag(tier), gbp_tag(tier))},
             {act(Action::Kind::Counter, kSpoofCounter), act(Action::Kind::Drop)}, 0);
      }
      emit(kCheckChain,
           {simple(Match::Kind::NfProto, f), not_in_set(f, Dir::Src, set_name("ep", f)),
            tag(Match::Kind::TagRange, static_cast<std::uint16_t>(last_tag() + 1), 0xffff)},
           {act(Action::Kind::Counter, kBadTagCounter), act(Action::Kind::Drop)}, 0);
    }
  }

  void emit(const std::string& chain, Alt matches, std::vector<Action> actions, RuleId origin) {
    plan_.rules.push_back(RuleDef{chain, std::move(matches), std::move(actions), origin});
  }

  // Alternatives under which one side of a rule matches in a context.
  std::vector<Alt> side_alts(const Rule& rule, const PeerMatch& m, Dir d, const Ctx& c, bool deny) {
    if (c.tagged && d == Dir::Src) return tagged_alts(m, deny);
    const bool side_is_host =
        (c.hook == Hook::Input && d == Dir::Dst) || (c.hook == Hook::Output && d == Dir::Src);
    switch (m.entity) {
      case PeerMatch::Entity::Host:
        // The host is reached through input and speaks through output; a
        // forwarded packet never has it as an end.
        if (side_is_host) return {{}};
        return {};
      case PeerMatch::Entity::World: {
        if (side_is_host) return {};
        std::vector<Cidr> cidrs;
        for (const auto& x : m.cidrs) {
          if (x.base.family == c.fam) cidrs.push_back(x);
        }
        if (cidrs.empty()) return {};
        const std::string name =
            "w" + std::to_string(rule.id) + (d == Dir::Src ? "f" : "t") + fam_suffix(c.fam);
        if (plan_.find_set(name) == nullptr) {
          add_set(name, c.fam, true);
          set(name).prefixes = normalize(std::move(cidrs));
        }
        return {{not_in_set(c.fam, d, set_name("ep", c.fam)),
                 not_in_set(c.fam, d, set_name("cidr", c.fam)),
                 not_in_set(c.fam, d, set_name("node", c.fam)), in_set(c.fam, d, name)}};
      }
      case PeerMatch::Entity::Endpoint:
        if (side_is_host) return {};
        return endpoint_alts(m, d, c.fam);
    }
    return {};
  }

  // A source known only by its tag: an endpoint of the tagged tier, member
  // of no selector, fail closed (decide_tagged()): a deny ignores its source
  // selector, a flow that needs one cannot match. The entry rule admits only
  // tags 1..N, so "every tier" needs no match.
  static std::vector<Alt> tagged_alts(const PeerMatch& m, bool deny) {
    if (m.entity != PeerMatch::Entity::Endpoint) return {};
    if (m.selector && !deny) return {};
    if (m.tiers.empty()) return {{}};
    std::vector<Alt> out;
    for (TierId t : m.tiers) out.push_back({tag_is(gbp_tag(t))});
    return out;
  }

  static std::vector<Alt> endpoint_alts(const PeerMatch& m, Dir d, Fam f) {
    Alt sel;
    if (m.selector) sel.push_back(in_set(f, d, selector_set(*m.selector, f)));
    // An address in a container network that no identity source knows is a
    // quarantined endpoint with no labels.
    const Alt unknown{in_set(f, d, set_name("cidr", f)), not_in_set(f, d, set_name("ep", f))};
    std::vector<Alt> out;
    if (m.tiers.empty()) {
      if (m.selector) return {sel};
      return {{in_set(f, d, set_name("ep", f))}, unknown};
    }
    for (TierId t : m.tiers) {
      Alt a{in_set(f, d, tier_set(t, f))};
      a.insert(a.end(), sel.begin(), sel.end());
      out.push_back(std::move(a));
      if (t == kQuarantineTier && !m.selector) out.push_back(unknown);
    }
    return out;
  }

  static std::vector<Alt> port_alts(const std::vector<PortMatch>& ports, Fam f) {
    std::vector<Alt> out;
    for (const auto& p : ports) {
      if (p.any) return {{}};
      if (p.is_icmp()) {
        if ((p.protocol == proto::kIcmp) != (f == Fam::V4)) continue;
        Alt a{simple(Match::Kind::L4Proto, f, p.protocol)};
        if (!(p.lo == 0 && p.hi == 255)) {
          a.push_back(simple(Match::Kind::IcmpTypeRange, f, p.protocol, p.lo, p.hi));
        }
        out.push_back(std::move(a));
      } else {
        out.push_back({simple(Match::Kind::L4Proto, f, p.protocol),
                       simple(Match::Kind::DportRange, f, p.protocol, p.lo, p.hi)});
      }
    }
    return out;
  }

  std::vector<Alt> rule_alts(const Rule& r, const Ctx& c, bool deny) {
    auto alts =
        product(side_alts(r, r.from, Dir::Src, c, deny), side_alts(r, r.to, Dir::Dst, c, deny));
    return product(alts, port_alts(r.ports, c.fam));
  }

  // When is a deny audited rather than enforced, given the context's scope
  // (at least one side is a container)? See deny_is_audited().
  std::vector<Alt> audit_alts(const Ctx& c) const {
    if (all_audit_) return {{}};
    if (none_audit_) return {};
    auto aud = [&](Dir d) {
      std::vector<Alt> out{{in_set(c.fam, d, set_name("aud", c.fam))}};
      if (quarantine_audit_) {
        out.push_back({in_set(c.fam, d, set_name("cidr", c.fam)),
                       not_in_set(c.fam, d, set_name("ep", c.fam))});
      }
      return out;
    };
    auto non = [&](Dir d) {
      return std::vector<Alt>{{not_in_set(c.fam, d, set_name("ep", c.fam)),
                               not_in_set(c.fam, d, set_name("cidr", c.fam))}};
    };
    if (c.tagged) {
      // The source is an endpoint of the tagged tier.
      std::vector<Alt> src;
      for (std::size_t t = 0; t < policy_.tiers.size(); ++t) {
        if (policy_.tiers[t].mode == Mode::Audit)
          src.push_back({tag_is(gbp_tag(static_cast<TierId>(t)))});
      }
      if (c.hook == Hook::Input) return src;
      auto out = product(src, aud(Dir::Dst));
      for (auto& a : product(src, non(Dir::Dst))) out.push_back(std::move(a));
      return out;
    }
    switch (c.hook) {
      case Hook::Input:
        return aud(Dir::Src);
      case Hook::Output:
        return aud(Dir::Dst);
      case Hook::Forward: {
        auto out = product(aud(Dir::Src), aud(Dir::Dst));
        for (auto& a : product(aud(Dir::Src), non(Dir::Dst))) out.push_back(std::move(a));
        for (auto& a : product(non(Dir::Src), aud(Dir::Dst))) out.push_back(std::move(a));
        return out;
      }
    }
    return {};
  }

  std::vector<Action> verdict(char v, RuleId id, bool log) const {
    std::vector<Action> out{act(Action::Kind::Counter, counter_name(id))};
    if (log)
      out.push_back(
          act(Action::Kind::Log, log_prefix(v, id, policy_.generation), options_.log_group));
    if (v == 'd') {
      out.push_back(act(Action::Kind::Drop));
    } else {
      out.push_back(act(Action::Kind::CtMark, {}, id));
      out.push_back(act(Action::Kind::Accept));
    }
    return out;
  }

  // True when membership in `set` implies being a known endpoint.
  static bool implies_endpoint(const std::string& set) {
    return set.starts_with("ep") || set.starts_with("aud") || set.starts_with("t") ||
           set.starts_with("s");
  }

  // Tier id of a tier set name ("t3_4" -> 3).
  static std::optional<TierId> tier_of(const std::string& set) {
    if (!set.starts_with("t")) return std::nullopt;
    TierId t = 0;
    auto r = std::from_chars(set.data() + 1, set.data() + set.size(), t);
    if (r.ec != std::errc() || *r.ptr != '_') return std::nullopt;
    return t;
  }

  // Simplifies an audit alternative against the rule's own matches: drops
  // alternatives that contradict them (nullopt) and matches they imply.
  std::optional<Alt> refine(const Alt& rule, const Alt& alt) const {
    Alt out;
    for (const Match& a : alt) {
      bool keep = true;
      for (const Match& m : rule) {
        if (a.kind == Match::Kind::TagRange && m.kind == Match::Kind::TagRange) {
          if (a.lo == m.lo && a.hi == m.hi) keep = false;
          if (a.hi < m.lo || m.hi < a.lo) return std::nullopt;  // disjoint tags
          continue;
        }
        if (m.dir != a.dir || m.family != a.family) continue;
        const bool m_in = m.kind == Match::Kind::InSet;
        const bool m_out = m.kind == Match::Kind::NotInSet;
        const bool a_in = a.kind == Match::Kind::InSet;
        const bool a_out = a.kind == Match::Kind::NotInSet;
        if ((m_in && a_out && m.set == a.set) || (m_out && a_in && m.set == a.set)) {
          return std::nullopt;
        }
        if (m_in && a_out && a.set.starts_with("ep") && implies_endpoint(m.set))
          return std::nullopt;
        if (m_out && a_in && m.set.starts_with("ep") && implies_endpoint(a.set))
          return std::nullopt;
        if (m_in && a_in && m.set == a.set) keep = false;
        if (m_in && a_in && a.set.starts_with("aud")) {
          if (auto t = tier_of(m.set)) {
            if (policy_.tiers[*t].mode != Mode::Audit) return std::nullopt;
            keep = false;  // every member of an audit tier is in aud
          }
        }
        if (m_out && a_out && m.set == a.set) keep = false;
      }
      if (keep) out.push_back(a);
    }
    return out;
  }

  // A deny decision: audited under some alternatives, enforced otherwise.
  void emit_deny(const Ctx& c, const Alt& m, RuleId id) {
    for (const auto& a : audit_alts(c)) {
      auto refined = refine(m, a);
      if (!refined) continue;
      Alt both = m;
      both.insert(both.end(), refined->begin(), refined->end());
      const bool always = refined->empty();
      emit(c.chain, std::move(both), verdict('a', id, true), id);
      if (always) return;  // audited whenever it matches: no enforced variant
    }
    emit(c.chain, m, verdict('d', id, true), id);
  }

  void emit_allow(const Ctx& c, const Alt& m, RuleId id, bool log) {
    if (c.has_staged) emit(c.chain, m, {act(Action::Kind::Jump, c.staged_chain)}, id);
    emit(c.chain, m, verdict('l', id, log), id);
  }

  void add_decision_chain(Hook hook, Fam f, bool tagged) {
    const std::string name = decision_chain(hook, f, tagged);
    Ctx c{hook, f, name, "staged_" + name, false, tagged};
    // Staged denies: matched only after an allow; they turn it into audit.
    std::vector<std::pair<Alt, RuleId>> staged;
    for (const auto& r : policy_.denies) {
      if (!r.staged) continue;
      for (auto& a : rule_alts(r, c, true)) staged.emplace_back(std::move(a), r.id);
    }
    plan_.chains.push_back(ChainDef{c.chain, std::nullopt, 0});
    if (!staged.empty()) {
      c.has_staged = true;
      plan_.chains.push_back(ChainDef{c.staged_chain, std::nullopt, 0});
      for (auto& [alt, id] : staged)
        emit(c.staged_chain, std::move(alt), verdict('a', id, true), id);
    }
    for (const auto& r : policy_.denies) {
      if (r.staged) continue;
      for (const auto& a : rule_alts(r, c, true)) emit_deny(c, a, r.id);
    }
    for (const auto& r : policy_.flows) {
      for (const auto& a : rule_alts(r, c, false)) emit_allow(c, a, r.id, r.log);
    }
    if (hook == Hook::Forward && policy_.intra_tier_allow) {
      for (std::size_t t = 0; t < policy_.tiers.size(); ++t) {
        if (!policy_.tiers[t].declared) continue;
        const auto tier = static_cast<TierId>(t);
        const std::string s = tier_set(tier, f);
        Match src = tagged ? tag_is(gbp_tag(tier)) : in_set(f, Dir::Src, s);
        emit_allow(c, {src, in_set(f, Dir::Dst, s)}, kRuleIntraTier, false);
      }
    }
    emit_deny(c, {}, kRuleDefaultDeny);
  }

 public:
  static std::vector<Element> elements_of(const CompiledPolicy& policy, const EndpointTable& table,
                                          EndpointId id, const IpAddress& a, bool tags) {
    std::vector<Element> out;
    const EndpointEntry* e = table.entry(id);
    if (e == nullptr) return out;
    out.push_back(Element{set_name("ep", a.family), a, std::nullopt});
    out.push_back(Element{tier_set(e->tier, a.family), a, std::nullopt});
    for (SelectorId s : table.selectors(*e))
      out.push_back(Element{selector_set(s, a.family), a, std::nullopt});
    if (e->tier < policy.tiers.size() && policy.tiers[e->tier].mode == Mode::Audit) {
      out.push_back(Element{set_name("aud", a.family), a, std::nullopt});
    }
    if (tags) out.push_back(Element{set_name("tag", a.family), a, gbp_tag(e->tier)});
    return out;
  }

 private:
  const CompiledPolicy& policy_;
  const EndpointTable& table_;
  Options options_;
  Plan plan_;
  bool all_audit_ = false;
  bool none_audit_ = true;
  bool quarantine_audit_ = false;
};

// ---- rendering ----

const char* l4_name(std::uint8_t p) {
  switch (p) {
    case proto::kTcp:
      return "tcp";
    case proto::kUdp:
      return "udp";
    case proto::kSctp:
      return "sctp";
    case proto::kIcmp:
      return "icmp";
    case proto::kIcmpv6:
      return "ipv6-icmp";
    default:
      return nullptr;
  }
}

std::string range(std::uint16_t lo, std::uint16_t hi) {
  return lo == hi ? std::to_string(lo) : std::to_string(lo) + "-" + std::to_string(hi);
}

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::string render_match(const Match& m) {
  const std::string ip = m.family == Fam::V4 ? "ip" : "ip6";
  const std::string addr = ip + (m.dir == Dir::Src ? " saddr" : " daddr");
  switch (m.kind) {
    case Match::Kind::NfProto:
      return m.family == Fam::V4 ? "meta nfproto ipv4" : "meta nfproto ipv6";
    case Match::Kind::L4Proto: {
      const char* n = l4_name(m.proto);
      return std::string("meta l4proto ") + (n != nullptr ? n : std::to_string(m.proto).c_str());
    }
    case Match::Kind::InSet:
      return addr + " @" + m.set;
    case Match::Kind::NotInSet:
      return addr + " != @" + m.set;
    case Match::Kind::DportRange:
      return "th dport " + range(m.lo, m.hi);
    case Match::Kind::IcmpTypeRange:
      return std::string(m.proto == proto::kIcmp ? "icmp" : "icmpv6") + " type " +
             range(m.lo, m.hi);
    case Match::Kind::CtStateEstRel:
      return "ct state established,related";
    case Match::Kind::IcmpV6Nd:
      return "icmpv6 type 133-137";
    case Match::Kind::IifInSet:
      return "iifname @" + m.set;
    case Match::Kind::IifNotInSet:
      return "iifname != @" + m.set;
    case Match::Kind::OifInSet:
      return "oifname @" + m.set;
    case Match::Kind::TagRange:
      return "meta mark & " + hex32(0xffff) + " " +
             (m.lo == m.hi ? hex32(m.lo) : hex32(m.lo) + "-" + hex32(m.hi));
    case Match::Kind::TagNot:
      return "meta mark & " + hex32(0xffff) + " != " + hex32(m.lo);
  }
  return "?";
}

std::string render_action(const Action& a) {
  char buf[16];
  switch (a.kind) {
    case Action::Kind::Counter:
      return "counter name \"" + a.name + "\"";
    case Action::Kind::Log:
      return "log prefix \"" + a.name + "\" group " + std::to_string(a.value);
    case Action::Kind::CtMark:
      std::snprintf(buf, sizeof buf, "0x%08x", a.value & 0xffffU);
      return std::string("ct mark set ct mark & 0xffff0000 | ") + buf;
    case Action::Kind::Accept:
      return "accept";
    case Action::Kind::Drop:
      return "drop";
    case Action::Kind::Jump:
      return "jump " + a.name;
    case Action::Kind::Goto:
      return "goto " + a.name;
    case Action::Kind::SetMark:
      return "meta mark set " + hex32(a.value);
    case Action::Kind::SetMarkMap:
      return std::string("meta mark set ") + (a.family == Fam::V4 ? "ip" : "ip6") + " saddr map @" +
             a.name;
  }
  return "?";
}

}  // namespace

const SetDef* Plan::find_set(std::string_view name) const {
  for (const auto& s : sets) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

std::string set_name(std::string_view kind, IpAddress::Family family) {
  return std::string(kind) + fam_suffix(family);
}
std::string tier_set(TierId tier, IpAddress::Family family) {
  return "t" + std::to_string(tier) + "_" + fam_suffix(family);
}
std::string selector_set(SelectorId selector, IpAddress::Family family) {
  return "s" + std::to_string(selector) + "_" + fam_suffix(family);
}
std::string counter_name(RuleId rule) { return "c" + std::to_string(rule); }

std::string log_prefix(char verdict, RuleId rule, std::uint64_t generation) {
  return std::string("tw:") + verdict + ":" + std::to_string(rule) + ":" +
         std::to_string(generation);
}

std::optional<LogTag> parse_log_prefix(std::string_view prefix) {
  const auto tag = decode_prefix(prefix);  // the one decoder (flow_events.h)
  if (!tag) return std::nullopt;
  LogTag out;
  out.verdict = tag->verdict == Verdict::Deny ? 'd' : tag->verdict == Verdict::Audit ? 'a' : 'l';
  out.rule = tag->rule;
  out.generation = tag->generation;
  return out;
}

std::vector<Element> endpoint_elements(const CompiledPolicy& policy, const EndpointTable& table,
                                       EndpointId id) {
  return endpoint_elements(policy, table, id, Options{});
}

std::vector<Element> endpoint_elements(const CompiledPolicy& policy, const EndpointTable& table,
                                       EndpointId id, const Options& options) {
  std::vector<Element> out;
  for (const auto& a : table.addresses(id)) {
    auto part = Builder::elements_of(policy, table, id, a, options.overlay.enabled());
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

std::optional<TierId> tier_of_tag(const CompiledPolicy& policy, std::uint32_t mark) {
  const std::uint32_t t = mark & 0xffffU;
  if (t == 0 || t > policy.tiers.size()) return std::nullopt;
  return static_cast<TierId>(t - 1);
}

Plan build_plan(const RuleSet& rules, const Options& options) {
  return Builder(rules, options).build();
}

std::string render(const Plan& plan) {
  std::ostringstream out;
  out << "# tierwall generation " << plan.generation << ", policy digest " << plan.digest << "\n";
  out << "table inet " << plan.table << " {\n";
  for (const auto& c : plan.counters) out << "\tcounter " << c << " {\n\t}\n\n";
  for (const auto& s : plan.sets) {
    const char* type = s.key == SetDef::Key::Ifname ? "ifname"
                       : s.family == Fam::V4        ? "ipv4_addr"
                                                    : "ipv6_addr";
    out << "\t" << (s.mark_map ? "map " : "set ") << s.name << " {\n\t\ttype " << type
        << (s.mark_map ? " : mark" : "") << "\n";
    if (s.interval) out << "\t\tflags interval\n";
    std::vector<std::string> elems;
    for (const auto& p : s.prefixes) elems.push_back(p.to_string());
    for (std::size_t i = 0; i < s.addresses.size(); ++i) {
      elems.push_back(s.addresses[i].to_string());
      if (s.mark_map && i < s.marks.size()) elems.back() += " : " + hex32(s.marks[i]);
    }
    for (const auto& n : s.ifnames) elems.push_back("\"" + n + "\"");
    if (!elems.empty()) {
      out << "\t\telements = { ";
      for (std::size_t i = 0; i < elems.size(); ++i) {
        if (i > 0) out << (i % 4 == 0 ? ",\n\t\t\t     " : ", ");
        out << elems[i];
      }
      out << " }\n";
    }
    out << "\t}\n\n";
  }
  for (std::size_t ci = 0; ci < plan.chains.size(); ++ci) {
    const auto& c = plan.chains[ci];
    out << "\tchain " << c.name << " {\n";
    if (c.hook) {
      const char* hook = *c.hook == Hook::Forward ? "forward"
                         : *c.hook == Hook::Input ? "input"
                                                  : "output";
      out << "\t\ttype filter hook " << hook << " priority " << c.priority << "; policy accept;\n";
    }
    for (const auto& r : plan.rules) {
      if (r.chain != c.name) continue;
      out << "\t\t";
      bool first = true;
      for (const auto& m : r.matches) {
        out << (first ? "" : " ") << render_match(m);
        first = false;
      }
      for (const auto& a : r.actions) {
        out << (first ? "" : " ") << render_action(a);
        first = false;
      }
      out << "\n";
    }
    out << "\t}\n";
    if (ci + 1 < plan.chains.size()) out << "\n";
  }
  out << "}\n";
  return out.str();
}

}  // namespace tierwall::dataplane::nft
