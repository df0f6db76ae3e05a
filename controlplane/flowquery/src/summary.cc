#include "tierwall/flowquery/summary.h"

#include <algorithm>

namespace tierwall::flowquery {

std::string peer_of(const Peer& p) {
  switch (p.entity) {
    case Entity::Host:
      return "host";
    case Entity::World:
      return "world";
    case Entity::Endpoint:
      return p.tier.empty() ? std::string("unassigned") : std::string(p.tier);
    case Entity::None:
      break;
  }
  return p.entity_text.empty() ? std::string("unknown") : std::string(p.entity_text);
}

CellCounts Summary::cell(const std::string& from, const std::string& to) const {
  const auto it = matrix.find({from, to});
  return it == matrix.end() ? CellCounts{} : it->second;
}

namespace {

std::uint64_t count_of(const Record& r) {
  return r.count > 0 ? static_cast<std::uint64_t>(r.count) : 1;
}

// Name shown for one side of a denied pair: the endpoint's name, its address
// when it has none, "host", or the world address.
std::string side_name(const Peer& p) {
  if (p.entity == Entity::Host) return "host";
  if (!p.name.empty()) return std::string(p.name);
  return std::string(p.ip);
}

void seen(std::map<std::string, EndpointSeen>& where, const std::string& key, const Peer& p,
          const Record& r, std::size_t limit) {
  auto it = where.find(key);
  if (it == where.end()) {
    if (where.size() >= limit) return;
    EndpointSeen e;
    e.ip = std::string(p.ip);
    e.name = std::string(p.name);
    e.tier = std::string(p.tier);
    e.first_time = std::string(r.time);
    it = where.emplace(key, std::move(e)).first;
  }
  it->second.records += 1;
  it->second.events += count_of(r);
  it->second.last_time = std::string(r.time);
}

bool is_special_peer(const std::string& p) {
  return p == "quarantine" || p == "unassigned" || p == "host" || p == "world";
}

}  // namespace

void SummaryBuilder::add(const Record& r) {
  ++s_.records;
  ++s_.records_by_type[std::string(r.type_text)];
  if (!r.node.empty() && !nodes_.contains(std::string(r.node))) nodes_.emplace(r.node);
  if (s_.first_time.empty() || r.time_us < s_.first_us) {
    s_.first_us = r.time_us;
    s_.first_time = std::string(r.time);
  }
  if (s_.last_time.empty() || r.time_us > s_.last_us) {
    s_.last_us = r.time_us;
    s_.last_time = std::string(r.time);
  }
  switch (r.type) {
    case RecordType::Flow: {
      for (const Peer* p : {&r.src, &r.dst}) {
        if (p->entity != Entity::Endpoint) continue;
        if (p->name.empty()) {
          seen(unassigned_, std::string(p->ip), *p, r, kMaxEndpoints);
        } else if (p->tier == "quarantine") {
          seen(quarantined_, std::string(p->name) + "\n" + std::string(p->ip), *p, r,
               kMaxEndpoints);
        }
      }
      if (r.event != "start") break;  // an end is the same connection again
      const std::uint64_t n = count_of(r);
      std::string from = peer_of(r.src), to = peer_of(r.dst);
      peer_set_.insert(from);
      peer_set_.insert(to);
      CellCounts& cell = s_.matrix[{from, to}];
      s_.flow_events += n;
      switch (r.verdict) {
        case Verdict::Allow:
          cell.allowed += n;
          s_.totals.allowed += n;
          break;
        case Verdict::Audit:
          cell.audited += n;
          s_.totals.audited += n;
          break;
        case Verdict::Deny:
          cell.denied += n;
          s_.totals.denied += n;
          denied_[PairKey{std::move(from), side_name(r.src), std::move(to), side_name(r.dst),
                          std::string(r.proto), r.dst.port}] += n;
          denied_rules_[{std::string(r.rule_kind), std::string(r.rule_name)}] += n;
          break;
        case Verdict::None:
          break;
      }
      break;
    }
    case RecordType::Loss: {
      const std::uint64_t n = r.count > 0 ? static_cast<std::uint64_t>(r.count) : 0;
      s_.loss_events += n;
      ++s_.loss_records;
      s_.loss_lower_bound = s_.loss_lower_bound || r.lower_bound;
      LossSource& src = loss_sources_[std::string(r.source)];
      src.source = std::string(r.source);
      ++src.records;
      src.events += n;
      src.lower_bound = src.lower_bound || r.lower_bound;
      if (s_.loss.size() < kMaxLossRecords) {
        s_.loss.push_back(LossRecord{std::string(r.time), std::string(r.node),
                                     std::string(r.source), std::string(r.reason), n,
                                     r.lower_bound});
      }
      break;
    }
    case RecordType::Policy:
      s_.policies.push_back(PolicyChange{std::string(r.time), std::string(r.node),
                                         std::string(r.name), std::string(r.digest),
                                         std::string(r.by), r.generation, r.time_us});
      break;
    default:
      break;
  }
}

void SummaryBuilder::add_malformed(const std::string& file, std::uint64_t line,
                                   const std::string& why) {
  ++s_.malformed;
  if (s_.malformed_examples.size() < kMaxExamples)
    s_.malformed_examples.push_back(file + ":" + std::to_string(line) + ": " + why);
}

void SummaryBuilder::add_torn(const std::string& file, std::uint64_t line, std::size_t bytes) {
  s_.torn.push_back(file + ":" + std::to_string(line) + " (" + std::to_string(bytes) +
                    " bytes, no newline)");
}

Summary SummaryBuilder::finish(std::string log_dir, std::vector<std::string> files,
                               Verification verification) && {
  s_.log_dir = std::move(log_dir);
  s_.files = std::move(files);
  s_.verification = std::move(verification);
  s_.nodes.assign(nodes_.begin(), nodes_.end());

  for (const auto& p : peer_set_)
    if (!is_special_peer(p)) s_.peers.push_back(p);
  for (const char* p : {"quarantine", "unassigned", "host", "world"})
    if (peer_set_.contains(p)) s_.peers.emplace_back(p);

  for (const auto& [k, n] : denied_) {
    s_.top_denied.push_back(DeniedPair{std::get<0>(k), std::get<1>(k), std::get<2>(k),
                                       std::get<3>(k), std::get<4>(k), std::get<5>(k), n});
  }
  // Most first; ties in key order so that the report is deterministic.
  std::stable_sort(s_.top_denied.begin(), s_.top_denied.end(),
                   [](const DeniedPair& a, const DeniedPair& b) { return a.count > b.count; });
  if (s_.top_denied.size() > top_) s_.top_denied.resize(top_);
  for (const auto& [k, n] : denied_rules_)
    s_.top_denied_rules.push_back(RuleCount{k.first, k.second, n});
  std::stable_sort(s_.top_denied_rules.begin(), s_.top_denied_rules.end(),
                   [](const RuleCount& a, const RuleCount& b) { return a.count > b.count; });
  if (s_.top_denied_rules.size() > top_) s_.top_denied_rules.resize(top_);

  for (auto& [k, e] : quarantined_) s_.quarantined.push_back(std::move(e));
  for (auto& [k, e] : unassigned_) s_.unassigned.push_back(std::move(e));
  for (auto& [k, l] : loss_sources_) s_.loss_by_source.push_back(std::move(l));
  return std::move(s_);
}

nlohmann::json to_json(const Summary& s) {
  using nlohmann::json;
  json j{{"logDir", s.log_dir}, {"files", s.files}, {"nodes", s.nodes}};
  if (!s.first_time.empty()) j["timeSpan"] = {{"first", s.first_time}, {"last", s.last_time}};
  j["records"] = {{"total", s.records},
                  {"byType", s.records_by_type},
                  {"malformed", s.malformed},
                  {"malformedExamples", s.malformed_examples},
                  {"torn", s.torn}};
  j["flowEvents"] = s.flow_events;
  j["totals"] = {
      {"allowed", s.totals.allowed}, {"denied", s.totals.denied}, {"audited", s.totals.audited}};
  json cells = json::array();
  for (const auto& [k, c] : s.matrix) {
    cells.push_back({{"from", k.first},
                     {"to", k.second},
                     {"allowed", c.allowed},
                     {"denied", c.denied},
                     {"audited", c.audited}});
  }
  j["matrix"] = {{"peers", s.peers}, {"cells", cells}};
  json pairs = json::array();
  for (const auto& p : s.top_denied) {
    json pj{{"src", {{"tier", p.src_tier}, {"name", p.src_name}}},
            {"dst", {{"tier", p.dst_tier}, {"name", p.dst_name}}},
            {"proto", p.proto},
            {"count", p.count}};
    if (p.port >= 0) pj["dst"]["port"] = p.port;
    pairs.push_back(std::move(pj));
  }
  j["topDenied"] = pairs;
  json rules = json::array();
  for (const auto& r : s.top_denied_rules) {
    json rj{{"kind", r.kind}, {"count", r.count}};
    if (!r.name.empty()) rj["name"] = r.name;
    rules.push_back(std::move(rj));
  }
  j["topDeniedRules"] = rules;
  auto endpoints = [](const std::vector<EndpointSeen>& list) {
    json a = json::array();
    for (const auto& e : list) {
      json ej{{"ip", e.ip},
              {"records", e.records},
              {"events", e.events},
              {"first", e.first_time},
              {"last", e.last_time}};
      if (!e.name.empty()) ej["name"] = e.name;
      if (!e.tier.empty()) ej["tier"] = e.tier;
      a.push_back(std::move(ej));
    }
    return a;
  };
  j["quarantined"] = endpoints(s.quarantined);
  j["unassigned"] = endpoints(s.unassigned);
  json policies = json::array();
  for (const auto& p : s.policies) {
    policies.push_back({{"time", p.time},
                        {"node", p.node},
                        {"generation", p.generation},
                        {"name", p.name},
                        {"digest", p.digest},
                        {"by", p.by}});
  }
  j["policies"] = policies;
  json by_source = json::array();
  for (const auto& l : s.loss_by_source) {
    by_source.push_back({{"source", l.source},
                         {"records", l.records},
                         {"events", l.events},
                         {"lowerBound", l.lower_bound}});
  }
  json loss_records = json::array();
  for (const auto& l : s.loss) {
    loss_records.push_back({{"time", l.time},
                            {"node", l.node},
                            {"source", l.source},
                            {"reason", l.reason},
                            {"count", l.count},
                            {"lowerBound", l.lower_bound}});
  }
  j["loss"] = {{"records", s.loss_records},
               {"events", s.loss_events},
               {"lowerBound", s.loss_lower_bound},
               {"bySource", by_source},
               {"list", loss_records}};
  j["verification"] = {{"ran", s.verification.ran},
                       {"ok", s.verification.ok},
                       {"message", s.verification.message},
                       {"firstProblem", s.verification.first_problem}};
  return j;
}

}  // namespace tierwall::flowquery
