#include "tierwall/policy/yaml.h"

#include <iterator>
#include <map>
#include <sstream>
#include <utility>
#include <yaml.h>

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/parser.h>

namespace tierwall::policy::yaml {

const Node* Node::find(std::string_view key) const {
  if (kind != Kind::Map) return nullptr;
  for (std::size_t i = 0; i + 1 < children.size(); i += 2) {
    if (children[i].kind == Kind::Scalar && children[i].scalar == key) return &children[i + 1];
  }
  return nullptr;
}

std::string_view describe(const Node& node) {
  switch (node.kind) {
    case Kind::Null:
      return "null";
    case Kind::Scalar:
      return "a scalar";
    case Kind::Sequence:
      return "a list";
    case Kind::Map:
      return "a map";
  }
  return "?";
}

namespace {

// Assembles a tree from parser events; shared by both front ends.
class TreeBuilder {
 public:
  TreeBuilder(std::shared_ptr<const std::string> file, const StreamHook* hook)
      : file_(std::move(file)), hook_(hook) {}

  void document_start() {
    stack_.clear();
    has_root_ = false;
    root_ = Node{};
  }
  void document_end(std::vector<Document>& out) {
    Document doc;
    doc.root = has_root_ ? std::move(root_) : Node{};
    doc.file = file_;
    doc.index = static_cast<int>(out.size());
    out.push_back(std::move(doc));
    has_root_ = false;
  }
  void scalar(Node n, const std::string& anchor) {
    if (!anchor.empty()) anchors_[anchor] = n;
    add(std::move(n));
  }
  enum class AliasResult { Ok, Unknown, TooLarge };
  AliasResult alias(const std::string& anchor, int line, int column) {
    auto it = anchors_.find(anchor);
    if (it == anchors_.end()) return AliasResult::Unknown;
    // Aliases copy their anchor; cap the total so that nested aliases
    // ("billion laughs") cannot expand a small file into gigabytes.
    expanded_ += count(it->second);
    if (expanded_ > kMaxAliasNodes) return AliasResult::TooLarge;
    Node copy = it->second;
    copy.line = line;
    copy.column = column;
    add(std::move(copy));
    return AliasResult::Ok;
  }
  void start(Kind kind, int line, int column, std::string anchor) {
    Node n;
    n.kind = kind;
    n.line = line;
    n.column = column;
    stack_.push_back(Frame{std::move(n), std::move(anchor)});
    // Children collect in a scratch vector reused per depth, so that each
    // container allocates its children exactly once (large inventories).
    if (scratch_.size() < stack_.size()) scratch_.resize(stack_.size());
    scratch_[stack_.size() - 1].clear();
  }
  void end() {
    auto& children = scratch_[stack_.size() - 1];
    Frame f = std::move(stack_.back());
    stack_.pop_back();
    f.node.children.reserve(children.size());
    std::move(children.begin(), children.end(), std::back_inserter(f.node.children));
    children.clear();
    if (!f.anchor.empty()) anchors_[f.anchor] = f.node;
    add(std::move(f.node));
  }

 private:
  struct Frame {
    Node node;
    std::string anchor;
  };
  void add(Node n) {
    if (stack_.empty()) {
      root_ = std::move(n);
      has_root_ = true;
    } else {
      if (hook_ != nullptr && streamed(n)) return;
      scratch_[stack_.size() - 1].push_back(std::move(n));
    }
  }

  // Hands an item of the hooked top-level list to the hook.
  bool streamed(Node& n) {
    if (stack_.size() != 2 || stack_[0].node.kind != Kind::Map ||
        stack_[1].node.kind != Kind::Sequence || scratch_[0].empty()) {
      return false;
    }
    const Node& key = scratch_[0].back();
    if (key.kind != Kind::Scalar || key.scalar != hook_->key) return false;
    hook_->on_item(std::move(n));
    return true;
  }

  static std::size_t count(const Node& n) {
    std::size_t c = 1;
    for (const auto& child : n.children) c += count(child);
    return c;
  }
  static constexpr std::size_t kMaxAliasNodes = 100000;

  std::shared_ptr<const std::string> file_;
  const StreamHook* hook_;
  std::size_t expanded_ = 0;
  std::vector<Frame> stack_;
  std::vector<std::vector<Node>> scratch_;
  Node root_;
  bool has_root_ = false;
  std::map<std::string, Node> anchors_;
};

bool is_null_plain(std::string_view s) {
  return s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL";
}

class YamlCppHandler : public YAML::EventHandler {
 public:
  YamlCppHandler(TreeBuilder& b, std::vector<Document>& out, Diagnostics& diags,
                 std::shared_ptr<const std::string> file)
      : b_(b), out_(out), diags_(diags), file_(std::move(file)) {}

  void OnDocumentStart(const YAML::Mark&) override { b_.document_start(); }
  void OnDocumentEnd() override { b_.document_end(out_); }
  void OnNull(const YAML::Mark& m, YAML::anchor_t anchor) override {
    // yaml-cpp 0.7 can emit null events forever at one position on a stray
    // ',' (upstream issue 1040); no document has that many nulls in a row.
    if (m.pos == last_null_pos_) {
      if (++nulls_here_ > 64) throw YAML::ParserException(m, "unexpected ','");
    } else {
      last_null_pos_ = m.pos;
      nulls_here_ = 0;
    }
    Node n;
    n.line = m.line + 1;
    n.column = m.column + 1;
    b_.scalar(std::move(n), name(anchor));
  }
  void OnAlias(const YAML::Mark& m, YAML::anchor_t anchor) override {
    switch (b_.alias(name(anchor), m.line + 1, m.column + 1)) {
      case TreeBuilder::AliasResult::Ok:
        break;
      case TreeBuilder::AliasResult::Unknown:
        diags_.error(SourceLoc{file_, m.line + 1, m.column + 1}, "unknown alias");
        break;
      case TreeBuilder::AliasResult::TooLarge:
        throw YAML::ParserException(m, "aliases expand to too many nodes");
    }
  }
  void OnScalar(const YAML::Mark& m, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    Node n;
    n.kind = Kind::Scalar;
    n.quoted = tag == "!";
    n.line = m.line + 1;
    n.column = m.column + 1;
    n.scalar = value;
    b_.scalar(std::move(n), name(anchor));
  }
  void OnSequenceStart(const YAML::Mark& m, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    b_.start(Kind::Sequence, m.line + 1, m.column + 1, name(anchor));
  }
  void OnSequenceEnd() override { b_.end(); }
  void OnMapStart(const YAML::Mark& m, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    b_.start(Kind::Map, m.line + 1, m.column + 1, name(anchor));
  }
  void OnMapEnd() override { b_.end(); }

 private:
  static std::string name(YAML::anchor_t a) {
    return a == YAML::NullAnchor ? std::string() : std::to_string(a);
  }
  TreeBuilder& b_;
  std::vector<Document>& out_;
  Diagnostics& diags_;
  std::shared_ptr<const std::string> file_;
  int last_null_pos_ = -1;
  int nulls_here_ = 0;
};

void parse_yaml_cpp(std::string_view text, const std::shared_ptr<const std::string>& file,
                    std::vector<Document>& out, Diagnostics& diags, const StreamHook* hook) {
  std::istringstream in{std::string(text)};
  TreeBuilder builder(file, hook);
  YamlCppHandler handler(builder, out, diags, file);
  try {
    YAML::Parser parser(in);
    while (parser.HandleNextDocument(handler)) {
    }
  } catch (const YAML::Exception& e) {
    diags.error(SourceLoc{file, e.mark.line + 1, e.mark.column + 1}, "YAML syntax: " + e.msg);
  }
}

class LibYamlParser {
 public:
  LibYamlParser() { yaml_parser_initialize(&parser_); }
  ~LibYamlParser() { yaml_parser_delete(&parser_); }
  LibYamlParser(const LibYamlParser&) = delete;
  LibYamlParser& operator=(const LibYamlParser&) = delete;
  yaml_parser_t* get() { return &parser_; }

 private:
  yaml_parser_t parser_{};
};

std::string anchor_of(const yaml_char_t* a) {
  return a == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(a));
}

void parse_libyaml(std::string_view text, const std::shared_ptr<const std::string>& file,
                   std::vector<Document>& out, Diagnostics& diags, const StreamHook* hook) {
  LibYamlParser p;
  yaml_parser_set_input_string(p.get(), reinterpret_cast<const unsigned char*>(text.data()),
                               text.size());
  TreeBuilder builder(file, hook);
  for (;;) {
    yaml_event_t ev;
    if (yaml_parser_parse(p.get(), &ev) == 0) {
      const yaml_parser_t* raw = p.get();
      std::string msg = "YAML syntax: ";
      msg += raw->problem != nullptr ? raw->problem : "parse error";
      if (raw->context != nullptr) {
        msg += " ";
        msg += raw->context;
      }
      diags.error(SourceLoc{file, static_cast<int>(raw->problem_mark.line) + 1,
                            static_cast<int>(raw->problem_mark.column) + 1},
                  msg);
      return;
    }
    const int line = static_cast<int>(ev.start_mark.line) + 1;
    const int column = static_cast<int>(ev.start_mark.column) + 1;
    bool done = false;
    switch (ev.type) {
      case YAML_DOCUMENT_START_EVENT:
        builder.document_start();
        break;
      case YAML_DOCUMENT_END_EVENT:
        builder.document_end(out);
        break;
      case YAML_SCALAR_EVENT: {
        Node n;
        n.line = line;
        n.column = column;
        std::string_view value(reinterpret_cast<const char*>(ev.data.scalar.value),
                               ev.data.scalar.length);
        const bool plain = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        if (!(plain && is_null_plain(value))) {
          n.kind = Kind::Scalar;
          n.quoted = !plain;
          n.scalar.assign(value);
        }
        builder.scalar(std::move(n), anchor_of(ev.data.scalar.anchor));
        break;
      }
      case YAML_ALIAS_EVENT: {
        const auto r = builder.alias(anchor_of(ev.data.alias.anchor), line, column);
        if (r == TreeBuilder::AliasResult::Unknown) {
          diags.error(SourceLoc{file, line, column}, "unknown alias");
        } else if (r == TreeBuilder::AliasResult::TooLarge) {
          diags.error(SourceLoc{file, line, column}, "YAML: aliases expand to too many nodes");
          yaml_event_delete(&ev);
          return;
        }
        break;
      }
      case YAML_SEQUENCE_START_EVENT:
        builder.start(Kind::Sequence, line, column, anchor_of(ev.data.sequence_start.anchor));
        break;
      case YAML_MAPPING_START_EVENT:
        builder.start(Kind::Map, line, column, anchor_of(ev.data.mapping_start.anchor));
        break;
      case YAML_SEQUENCE_END_EVENT:
      case YAML_MAPPING_END_EVENT:
        builder.end();
        break;
      case YAML_STREAM_END_EVENT:
        done = true;
        break;
      default:
        break;
    }
    yaml_event_delete(&ev);
    if (done) return;
  }
}

}  // namespace

std::vector<Document> parse(std::string_view text, std::shared_ptr<const std::string> file,
                            Parser parser, Diagnostics& diags, const StreamHook* hook) {
  std::vector<Document> out;
  if (parser == Parser::YamlCpp) {
    parse_yaml_cpp(text, file, out, diags, hook);
  } else {
    parse_libyaml(text, file, out, diags, hook);
  }
  return out;
}

}  // namespace tierwall::policy::yaml
