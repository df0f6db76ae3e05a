// The HTML audit report in a real browser: Debian's headless chromium
// renders a report of a synthetic log; the DOM must hold the key elements
// (heatmap cells, top-denied rows, the verification badge, the hostile
// container name as text) and the screenshot must be a real rendering (a
// decoded PNG of the asked size, with the heatmap's colours in it).
// Skipped when chromium is not installed (scripts/install-deps.sh installs it).
#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <vector>
#include <zlib.h>

#include <gtest/gtest.h>

#include "tierwall/cli/flow_commands.h"
#include "tierwall/flowquery/time.h"

namespace tierwall {
namespace {

namespace fs = std::filesystem;

constexpr int kWidth = 1400, kHeight = 2000;
const std::vector<std::string> kTiers{"public", "internal", "restricted", "payments", "batch"};
constexpr const char* kEvil = "<script>alert(1)</script>";

std::string find_chromium() {
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser"})
    if (fs::exists(p)) return p;
  return {};
}

// Runs a shell command, returns its stdout and exit status.
std::string run(const std::string& command, int& status) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) {
    status = -1;
    return out;
  }
  std::array<char, 65536> buf{};
  std::size_t n = 0;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  status = ::pclose(p);
  return out;
}

// A log of valid-format records (hashes are dummies: the report does not
// verify, the caller hands it the verification's result).
std::string synthetic_log(int& denied_pairs) {
  const std::string hash(64, 'a');
  const std::int64_t t0 = *flowquery::parse_rfc3339_us("2026-11-25T08:00:00Z");
  std::string log;
  std::int64_t seq = 0;
  auto record = [&](std::int64_t second, const std::string& type, const std::string& body) {
    ++seq;
    log += R"({"v":1,"seq":)" + std::to_string(seq) + R"(,"time":")" +
           flowquery::format_time_us(t0 + second * 1'000'000) + R"(","node":"node-a","type":")" +
           type + "\"," + body + R"(,"prev":")" + hash + R"(","hash":")" + hash + "\"}\n";
  };
  auto peer = [](const std::string& name, const std::string& ip, const std::string& tier,
                 int port) {
    return R"({"ip":")" + ip + R"(","port":)" + std::to_string(port) +
           R"(,"entity":"endpoint","name":")" + name + R"(","tier":")" + tier + "\"}";
  };
  auto flow = [&](std::int64_t second, const std::string& verdict, const std::string& src,
                  const std::string& dst, const std::string& rule, int count) {
    record(second, "flow",
           R"("event":"start","verdict":")" + verdict +
               R"(","proto":"tcp","dataplane":"nft","generation":3,"src":)" + src + R"(,"dst":)" +
               dst + R"(,"rule":)" + rule + R"(,"count":)" + std::to_string(count) +
               R"(,"packets":null,"bytes":null)");
  };
  record(0, "agent", R"("event":"start","version":"0.1.0")");
  for (int g = 1; g <= 4; ++g) {
    record(g * 3000, "policy",
           R"("generation":)" + std::to_string(g) + R"(,"name":"shop","digest":")" +
               std::string(64, static_cast<char>('0' + g)) + R"(","by":"tierctl apply")");
  }
  std::int64_t second = 10;
  std::set<std::string> pairs;
  for (std::size_t a = 0; a < kTiers.size(); ++a) {
    for (std::size_t b = 0; b < kTiers.size(); ++b) {
      const auto src =
          peer(kTiers[a] + "-1", "10.88." + std::to_string(a) + ".10", kTiers[a], 40000);
      const auto dst =
          peer(kTiers[b] + "-1", "10.88." + std::to_string(b) + ".20", kTiers[b], 5432);
      const int n = static_cast<int>((a * 7 + b * 3) % 11);
      flow(second += 7, "allow", src, dst, R"({"kind":"flow","name":"f"})", 1 + n * n * 10);
      if ((a + b) % 2 == 0) {
        flow(second += 7, "deny", src, dst, R"({"kind":"default-deny"})", 1 + n * 5);
        pairs.insert(kTiers[a] + kTiers[b]);
      }
      if ((a * b) % 3 == 1)
        flow(second += 7, "audit", src, dst, R"({"kind":"default-deny"})", n + 1);
    }
  }
  flow(second += 7, "deny", peer(kEvil, "10.88.9.9", "quarantine", 1234),
       peer("db-1", "10.88.2.20", "restricted", 22), R"({"kind":"deny","name":"no-ssh"})", 3);
  pairs.insert("evil");
  record(second += 7, "loss", R"("source":"nflog","reason":"ENOBUFS","count":12)");
  denied_pairs = static_cast<int>(pairs.size());
  return log;
}

struct Image {
  std::uint32_t width = 0, height = 0;
  int channels = 0;
  std::vector<std::uint8_t> pixels;  // unfiltered, row-major
};

std::uint32_t be32(const std::uint8_t* p) {
  return (static_cast<std::uint32_t>(p[0]) << 24) | (static_cast<std::uint32_t>(p[1]) << 16) |
         (static_cast<std::uint32_t>(p[2]) << 8) | p[3];
}

// A minimal PNG decoder: 8-bit RGB or RGBA, not interlaced (what chromium
// writes). Fails the test on anything else.
Image decode_png(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  const std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  Image img;
  const auto* d = reinterpret_cast<const std::uint8_t*>(data.data());
  EXPECT_GE(data.size(), 8u);
  EXPECT_EQ(data.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  std::string idat;
  int bit_depth = 0, colour = 0, interlace = 0;
  for (std::size_t pos = 8; pos + 12 <= data.size();) {
    const std::uint32_t len = be32(d + pos);
    const std::string type = data.substr(pos + 4, 4);
    if (pos + 12 + len > data.size()) break;
    const std::uint8_t* body = d + pos + 8;
    if (type == "IHDR") {
      img.width = be32(body);
      img.height = be32(body + 4);
      bit_depth = body[8];
      colour = body[9];
      interlace = body[12];
    } else if (type == "IDAT") {
      idat.append(reinterpret_cast<const char*>(body), len);
    } else if (type == "IEND") {
      break;
    }
    pos += 12 + len;
  }
  EXPECT_EQ(bit_depth, 8);
  EXPECT_EQ(interlace, 0);
  EXPECT_TRUE(colour == 2 || colour == 6) << "colour type " << colour;
  if (bit_depth != 8 || interlace != 0 || (colour != 2 && colour != 6)) return {};
  img.channels = colour == 6 ? 4 : 3;
  const std::size_t stride = img.width * static_cast<std::size_t>(img.channels);
  std::vector<std::uint8_t> raw((stride + 1) * img.height);
  uLongf raw_len = raw.size();
  const int z =
      ::uncompress(raw.data(), &raw_len, reinterpret_cast<const Bytef*>(idat.data()), idat.size());
  EXPECT_EQ(z, Z_OK);
  EXPECT_EQ(raw_len, raw.size());
  if (z != Z_OK || raw_len != raw.size()) return {};
  img.pixels.assign(stride * img.height, 0);
  const auto bpp = static_cast<std::size_t>(img.channels);
  for (std::size_t y = 0; y < img.height; ++y) {
    const std::uint8_t filter = raw[y * (stride + 1)];
    const std::uint8_t* in = &raw[y * (stride + 1) + 1];
    std::uint8_t* out = &img.pixels[y * stride];
    const std::uint8_t* up = y > 0 ? &img.pixels[(y - 1) * stride] : nullptr;
    for (std::size_t x = 0; x < stride; ++x) {
      const int a = x >= bpp ? out[x - bpp] : 0;
      const int b = up ? up[x] : 0;
      const int c = (up && x >= bpp) ? up[x - bpp] : 0;
      int v = in[x];
      switch (filter) {
        case 0:
          break;
        case 1:
          v += a;
          break;
        case 2:
          v += b;
          break;
        case 3:
          v += (a + b) / 2;
          break;
        case 4: {
          const int p = a + b - c;
          const int pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
          v += (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
          break;
        }
        default:
          ADD_FAILURE() << "bad PNG filter " << int{filter};
          return {};
      }
      out[x] = static_cast<std::uint8_t>(v & 0xff);
    }
  }
  return img;
}

class ReportBrowser : public ::testing::Test {
 protected:
  void SetUp() override {
    chromium_ = find_chromium();
    if (chromium_.empty()) {
      // CI installs it (scripts/install-deps.sh): there a missing browser is
      // a failure, never a silent skip.
      if (std::getenv("CI") != nullptr) FAIL() << "chromium is not installed";
      GTEST_SKIP() << "chromium is not installed (scripts/install-deps.sh)";
    }
    std::string tmpl = (fs::temp_directory_path() / "report-browser-XXXXXX").string();
    dir_ = ::mkdtemp(tmpl.data());
    fs::create_directories(dir_ + "/log");
    std::ofstream(dir_ + "/log/flows-20261125T080000.000000Z.jsonl")
        << synthetic_log(denied_pairs_);
    cli::ReportOptions o;
    o.log_dir = dir_ + "/log";
    o.output = dir_ + "/report.html";
    o.verification = {true, true, "63 records verified, 1 checkpoint signature valid", ""};
    std::ostringstream out, err;
    ASSERT_EQ(cli::report(o, out, err), 0) << err.str();
  }
  void TearDown() override {
    if (!dir_.empty()) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }
  // Flags every run needs: no sandbox (root in CI), no GPU, a throwaway profile.
  std::string chromium(const std::string& flags) const {
    return chromium_ +
           " --headless --no-sandbox --disable-gpu --hide-scrollbars "
           "--no-first-run --user-data-dir=" +
           dir_ + "/profile " + flags + " file://" + dir_ + "/report.html 2>" + dir_ +
           "/chromium.log";
  }

  std::string chromium_, dir_;
  int denied_pairs_ = 0;
};

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (auto p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

TEST_F(ReportBrowser, DomHasTheKeyElements) {
  int status = 0;
  const std::string dom = run("timeout 90 " + chromium("--dump-dom"), status);
  ASSERT_EQ(status, 0) << "chromium failed; see its log";
  ASSERT_NE(dom.find("</html>"), std::string::npos) << dom.substr(0, 500);
  // Peers: 5 tiers + quarantine; three panels of n x n cells.
  const std::size_t peers = kTiers.size() + 1;
  EXPECT_EQ(count(dom, "class=\"heatmap\""), 3u);
  EXPECT_EQ(count(dom, "<rect class=\"cell\""), 3 * peers * peers);
  // Top denied: one row per denied pair (fewer than the table's 20).
  const auto table = dom.find("id=\"top-denied\"");
  ASSERT_NE(table, std::string::npos);
  const auto body_end = dom.find("</tbody>", table);
  EXPECT_EQ(count(dom.substr(table, body_end - table), "<tr>"),
            static_cast<std::size_t>(denied_pairs_) + 1);  // + header row
  // Badge.
  const std::regex badge(R"(<div class="badge intact" id="verification">([^<]*)<small>)");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(dom, m, badge));
  EXPECT_NE(m[1].str().find("Chain intact"), std::string::npos);
  // The hostile name is text, never an element: no script element at all.
  EXPECT_NE(dom.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_EQ(dom.find("<script"), std::string::npos);
  EXPECT_NE(dom.find("id=\"policy-timeline\""), std::string::npos);
  EXPECT_EQ(count(dom, "class=\"generation\""), 4u);
}

TEST_F(ReportBrowser, ScreenshotIsARealRendering) {
  const std::string png = dir_ + "/shot.png";
  int status = 0;
  run("timeout 90 " + chromium("--screenshot=" + png + " --window-size=" + std::to_string(kWidth) +
                               "," + std::to_string(kHeight)),
      status);
  ASSERT_EQ(status, 0) << "chromium failed; see its log";
  ASSERT_TRUE(fs::exists(png));
  const Image img = decode_png(png);
  ASSERT_EQ(img.width, static_cast<std::uint32_t>(kWidth));
  ASSERT_EQ(img.height, static_cast<std::uint32_t>(kHeight));
  // The heatmaps sit below the header and the cards: well inside the band
  // y 200..1000. Count distinct colours and clearly green / red / amber pixels.
  std::set<std::uint32_t> colours;
  std::size_t green = 0, red = 0, amber = 0, dark_header = 0;
  const auto ch = static_cast<std::size_t>(img.channels);
  for (std::size_t y = 0; y < img.height; ++y) {
    for (std::size_t x = 0; x < img.width; ++x) {
      const std::uint8_t* p = &img.pixels[(y * img.width + x) * ch];
      const int r = p[0], g = p[1], b = p[2];
      if (y < 60 && r < 60 && g < 60 && b < 70) ++dark_header;
      if (y < 200 || y >= 1000) continue;
      colours.insert(static_cast<std::uint32_t>(r << 16 | g << 8 | b));
      if (g > r + 40 && g > b + 40) ++green;
      if (r > g + 80 && r > b + 80 && g < 120) ++red;
      if (r > 180 && g > 100 && g < 190 && b < 90) ++amber;
    }
  }
  EXPECT_GT(colours.size(), 50u) << "a blank or flat page";
  EXPECT_GT(green, 5000u) << "no allowed heatmap";
  EXPECT_GT(red, 5000u) << "no denied heatmap";
  EXPECT_GT(amber, 2000u) << "no audited heatmap";
  EXPECT_GT(dark_header, 20000u) << "no header bar";
}

}  // namespace
}  // namespace tierwall
