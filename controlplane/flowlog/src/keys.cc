#include "tierwall/flowlog/keys.h"

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <random>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "tierwall/flowlog/record.h"

namespace tierwall::flowlog {

namespace {

using PKey = std::shared_ptr<evp_pkey_st>;

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using Bio = std::unique_ptr<BIO, BioFree>;

struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

PKey wrap(EVP_PKEY* k) {
  return PKey(k, [](EVP_PKEY* p) { EVP_PKEY_free(p); });
}

bool set_error(std::string* error, std::string message) {
  if (error != nullptr) *error = std::move(message);
  return false;
}

std::string errno_text(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

std::string bio_text(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return n > 0 ? std::string(data, static_cast<std::size_t>(n)) : std::string();
}

std::optional<std::string> read_small_file(const std::string& path, std::string* error) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    set_error(error, errno_text("cannot open", path));
    return std::nullopt;
  }
  std::string content;
  std::array<char, 4096> buf{};
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      set_error(error, errno_text("cannot read", path));
      ::close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    content.append(buf.data(), static_cast<std::size_t>(n));
    if (content.size() > 65536) {
      ::close(fd);
      set_error(error, path + ": too large for a key file");
      return std::nullopt;
    }
  }
  ::close(fd);
  return content;
}

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

std::string dir_of(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

void sync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

std::string temp_name(const std::string& path) {
  std::random_device rd;
  return path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(rd());
}

std::optional<std::string> key_id_of(EVP_PKEY* k) {
  std::array<std::uint8_t, 32> raw{};
  std::size_t len = raw.size();
  if (EVP_PKEY_get_raw_public_key(k, raw.data(), &len) != 1 || len != raw.size()) {
    return std::nullopt;
  }
  Sha256 sha;
  const auto d =
      sha.digest(std::string_view(reinterpret_cast<const char*>(raw.data()), raw.size()));
  return to_hex(d.data(), d.size());
}

std::optional<std::string> public_pem_of(EVP_PKEY* k) {
  Bio bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), k) != 1) return std::nullopt;
  return bio_text(bio.get());
}

}  // namespace

bool write_file_atomic(const std::string& path, std::string_view content, unsigned mode, bool sync,
                       std::string* error) {
  const std::string tmp = temp_name(path);
  const int fd =
      ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, static_cast<mode_t>(mode));
  if (fd < 0) return set_error(error, errno_text("cannot create", tmp));
  bool ok = write_all(fd, content) && (!sync || ::fdatasync(fd) == 0);
  const int saved = errno;
  ok = (::close(fd) == 0) && ok;
  if (!ok) {
    errno = saved;
    const auto message = errno_text("cannot write", tmp);
    ::unlink(tmp.c_str());
    return set_error(error, message);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const auto message = errno_text("cannot rename to", path);
    ::unlink(tmp.c_str());
    return set_error(error, message);
  }
  if (sync) sync_dir(dir_of(path));
  return true;
}

// ---- PublicKey ------------------------------------------------------------

std::optional<PublicKey> PublicKey::from_pem(std::string_view pem, std::string* error) {
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) {
    set_error(error, "out of memory");
    return std::nullopt;
  }
  EVP_PKEY* k = PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr);
  if (k == nullptr) {
    set_error(error, "not a PEM public key");
    return std::nullopt;
  }
  auto key = wrap(k);
  if (EVP_PKEY_get_id(k) != EVP_PKEY_ED25519) {
    set_error(error, "not an Ed25519 public key");
    return std::nullopt;
  }
  auto id = key_id_of(k);
  if (!id) {
    set_error(error, "cannot read the raw public key");
    return std::nullopt;
  }
  PublicKey p;
  p.key_ = std::move(key);
  p.id_ = std::move(*id);
  return p;
}

std::optional<PublicKey> PublicKey::load(const std::string& path, std::string* error) {
  auto content = read_small_file(path, error);
  if (!content) return std::nullopt;
  std::string why;
  auto key = from_pem(*content, &why);
  if (!key) set_error(error, path + ": " + why);
  return key;
}

std::string PublicKey::pem() const { return key_ ? public_pem_of(key_.get()).value_or("") : ""; }

bool PublicKey::verify(std::string_view message, std::string_view signature_hex) const {
  if (!key_ || signature_hex.size() != kSignatureHexLen) return false;
  const auto sig = from_hex(signature_hex);
  if (!sig) return false;
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key_.get()) != 1) {
    return false;
  }
  return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig->data()),
                          sig->size(), reinterpret_cast<const unsigned char*>(message.data()),
                          message.size()) == 1;
}

// ---- SigningKey -----------------------------------------------------------

std::optional<SigningKey> SigningKey::load(const std::string& path, std::string* error) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    set_error(error, errno_text("cannot stat", path));
    return std::nullopt;
  }
  if ((st.st_mode & 077) != 0) {
    set_error(error, path + ": private key must not be accessible by group or others (chmod 600)");
    return std::nullopt;
  }
  auto content = read_small_file(path, error);
  if (!content) return std::nullopt;
  Bio bio(BIO_new_mem_buf(content->data(), static_cast<int>(content->size())));
  EVP_PKEY* k = bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr;
  OPENSSL_cleanse(content->data(), content->size());
  if (k == nullptr) {
    set_error(error, path + ": not a PEM private key");
    return std::nullopt;
  }
  SigningKey s;
  s.key_ = wrap(k);
  if (EVP_PKEY_get_id(k) != EVP_PKEY_ED25519) {
    set_error(error, path + ": not an Ed25519 key");
    return std::nullopt;
  }
  auto id = key_id_of(k);
  if (!id) {
    set_error(error, path + ": cannot read the public key");
    return std::nullopt;
  }
  s.public_.key_ = s.key_;
  s.public_.id_ = std::move(*id);
  return s;
}

std::optional<SigningKey> SigningKey::load_or_create(const std::string& path, std::string* error) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) {
      set_error(error, errno_text("cannot stat", path));
      return std::nullopt;
    }
    EVP_PKEY* raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
    if (raw == nullptr) {
      set_error(error, "cannot generate an Ed25519 key");
      return std::nullopt;
    }
    auto fresh = wrap(raw);
    Bio bio(BIO_new(BIO_s_mem()));
    if (!bio ||
        PEM_write_bio_PrivateKey(bio.get(), raw, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
      set_error(error, "cannot encode the private key");
      return std::nullopt;
    }
    std::string pem = bio_text(bio.get());
    const std::string tmp = temp_name(path);
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      set_error(error, errno_text("cannot create", tmp));
      return std::nullopt;
    }
    const bool ok = write_all(fd, pem) && ::fsync(fd) == 0;
    ::close(fd);
    OPENSSL_cleanse(pem.data(), pem.size());
    // link() fails with EEXIST when another process created the key first:
    // then that key wins and is loaded below.
    if (!ok || (::link(tmp.c_str(), path.c_str()) != 0 && errno != EEXIST)) {
      set_error(error, errno_text("cannot create", path));
      ::unlink(tmp.c_str());
      return std::nullopt;
    }
    ::unlink(tmp.c_str());
    sync_dir(dir_of(path));
  }
  auto key = load(path, error);
  if (!key) return std::nullopt;
  const std::string pub_path = path + ".pub";
  if (::access(pub_path.c_str(), F_OK) != 0) {
    if (!write_file_atomic(pub_path, key->public_key().pem(), 0644, true, error)) {
      return std::nullopt;
    }
  }
  return key;
}

std::string SigningKey::sign_hex(std::string_view message) const {
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key_.get()) != 1) {
    return {};
  }
  std::array<std::uint8_t, 64> sig{};
  std::size_t len = sig.size();
  if (EVP_DigestSign(ctx.get(), sig.data(), &len,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1 ||
      len != sig.size()) {
    return {};
  }
  return to_hex(sig.data(), sig.size());
}

}  // namespace tierwall::flowlog
