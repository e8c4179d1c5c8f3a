// Tests for the safetensors reader and writer: round trips, hand-built broken files (each error
// message checked), and the atomic replacement of the target file.
#include <signal.h>
#include <sys/resource.h>

#include <nlohmann/json.hpp>

#include "core/mapped_file.h"
#include "io/readers.h"
#include "rwkv/error.h"
#include "test_util.h"

namespace rwkv {
namespace {

namespace fs = std::filesystem;

const std::string kBadPath = "bad.safetensors";

std::vector<uint8_t> st_file(const std::string& header, const std::vector<uint8_t>& data = {}) {
  std::vector<uint8_t> out;
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(uint8_t(n >> (8 * i)));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

Bytes bytes_of(std::vector<uint8_t> v) {
  auto owned = std::make_shared<std::vector<uint8_t>>(std::move(v));
  Bytes b;
  b.data = {owned->data(), owned->size()};
  b.owner = owned;
  return b;
}

// The error read_safetensors raises for `file`, or "" if it reads fine.
std::string read_error(const std::vector<uint8_t>& file) {
  try {
    read_safetensors(bytes_of(file), kBadPath);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void expect_error(const std::vector<uint8_t>& file, const std::string& expected) {
  std::string msg = read_error(file);
  EXPECT_EQ(msg.rfind(kBadPath + ": ", 0), 0u) << msg;
  EXPECT_NE(msg.find(expected), std::string::npos) << "got: " << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

std::vector<uint8_t> tensor_bytes(const Tensor& t) { return {t.data, t.data + t.nbytes}; }

void expect_same(const TensorMap& a, const TensorMap& b) {
  ASSERT_EQ(a.names(), b.names());
  for (const std::string& name : a.names()) {
    const Tensor& x = a.at(name);
    const Tensor& y = b.at(name);
    EXPECT_EQ(x.dtype, y.dtype) << name;
    EXPECT_EQ(x.shape, y.shape) << name;
    EXPECT_EQ(tensor_bytes(x), tensor_bytes(y)) << name;
  }
}

// One tensor of every kind worth writing, deliberately not in alphabetical order.
TensorMap sample_map() {
  TensorMap m;
  m.path = "sample";
  m.metadata["origin"] = "hand built";
  auto fill = [](Tensor& t, uint8_t seed) {
    auto* p = const_cast<uint8_t*>(t.data);
    for (uint64_t i = 0; i < t.nbytes; ++i) p[i] = uint8_t(seed + i * 7);
  };
  fill(m.add_owned("z.weight", DType::F32, {2, 3}), 1);
  fill(m.add_owned("a.half", DType::F16, {5}), 2);
  fill(m.add_owned("m.scalar", DType::BF16, {}), 3);
  fill(m.add_owned("q.blocks", DType::Q8_0, {2, 64}), 4);
  m.add_owned("empty", DType::F32, {0, 4});
  fill(m.add_owned("b.q4", DType::Q4_0, {1, 32}), 5);
  return m;
}

nlohmann::json header_of(const std::vector<uint8_t>& file) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | file[size_t(i)];
  return nlohmann::json::parse(file.begin() + 8, file.begin() + 8 + ptrdiff_t(n));
}

std::vector<std::string> dir_entries(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(SafetensorsTest, RoundTripHandBuilt) {
  fs::path dir = test::temp_dir();
  std::string path = (dir / "m.safetensors").string();
  TensorMap m = sample_map();
  write_safetensors(m, path);

  TensorMap back = read_safetensors(map_file(path), path);
  expect_same(m, back);
  EXPECT_EQ(back.path, path);
  EXPECT_EQ(back.format, "safetensors");
  EXPECT_EQ(back.metadata.at("origin"), "hand built");
  EXPECT_EQ(back.metadata.at("format"), "pt");
  expect_same(m, read_tensor_map(path));  // picked out by its leading bytes

  // The header is space-padded to 8 bytes and the data offsets are contiguous in map order.
  std::vector<uint8_t> file = test::read_bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | file[size_t(i)];
  EXPECT_EQ(n % 8, 0u);
  nlohmann::json h = header_of(file);
  uint64_t offset = 0;
  for (const std::string& name : m.names()) {
    EXPECT_EQ(h[name]["data_offsets"][0].get<uint64_t>(), offset) << name;
    offset += m.at(name).nbytes;
    EXPECT_EQ(h[name]["data_offsets"][1].get<uint64_t>(), offset) << name;
  }
  EXPECT_EQ(file.size(), 8 + n + offset);
  EXPECT_EQ(h["q.blocks"]["dtype"], "Q8_0");
  EXPECT_EQ(h["m.scalar"]["shape"], nlohmann::json::array());
}

TEST(SafetensorsTest, TensorsPointIntoTheFile) {
  std::vector<uint8_t> data(8);
  for (int i = 0; i < 8; ++i) data[size_t(i)] = uint8_t(i + 1);
  Bytes b = bytes_of(st_file(R"({"w":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]}})", data));
  const uint8_t* start = b.data.data();
  size_t size = b.data.size();
  TensorMap m = read_safetensors(b, kBadPath);
  b = Bytes();  // the map keeps the buffer alive on its own
  const Tensor& t = m.at("w");
  EXPECT_EQ(t.data, start + size - 8);
  EXPECT_EQ(tensor_bytes(t), data);
}

TEST(SafetensorsTest, FileOrderAndMetadata) {
  std::string header = R"({"__metadata__":{"format":"pt","note":"x"},)"
                       R"("a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},)"
                       R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},)"
                       R"("c":{"dtype":"F32","shape":[],"data_offsets":[4,8]},)"
                       R"("d":{"dtype":"F32","shape":[3,0],"data_offsets":[12,12]}}   )";
  TensorMap m = read_safetensors(bytes_of(st_file(header, std::vector<uint8_t>(12))), kBadPath);
  EXPECT_EQ(m.names(), (std::vector<std::string>{"b", "c", "a", "d"}));
  EXPECT_EQ(m.metadata, (std::map<std::string, std::string>{{"format", "pt"}, {"note", "x"}}));
  EXPECT_EQ(m.at("c").shape, std::vector<int64_t>{});
  EXPECT_EQ(m.at("d").nbytes, 0u);
}

TEST(SafetensorsTest, EmptyHeaderIsAnEmptyMap) {
  EXPECT_EQ(read_safetensors(bytes_of(st_file("{}      ")), kBadPath).size(), 0u);
}

TEST(SafetensorsTest, RejectsBadLengths) {
  expect_error({1, 2, 3}, "too short for a safetensors header (3 bytes)");
  std::vector<uint8_t> f = st_file("{}");
  f[0] = 100;
  expect_error(f, "header length 100 exceeds the file size (10 bytes)");
  f[0] = 0xff, f[7] = 0xff;
  expect_error(f, "exceeds the file size");
  // A header over the cap that the file does hold.
  expect_error(st_file("{}" + std::string(100'000'001, ' ')), "exceeds the limit of 100000000");
}

TEST(SafetensorsTest, RejectsBadJson) {
  expect_error(st_file(R"({"w": {"dtype": "F32",)"), "invalid JSON header: ");
  expect_error(st_file("{\"w\n\": 1}"), "invalid JSON header: ");
  expect_error(st_file("[1, 2]"), "header is not a JSON object");
  expect_error(st_file(R"({"__metadata__": [1]})"), "__metadata__ is not a JSON object");
  expect_error(st_file(R"({"__metadata__": {"k": 1}})"), "__metadata__ value of k is not a string");
}

TEST(SafetensorsTest, RejectsBadEntries) {
  expect_error(st_file(R"({"w": 5})"), "tensor w: header entry is not a JSON object");
  expect_error(st_file(R"({"w": {"dtype": "F32", "shape": [1]}})", {0, 0, 0, 0}),
               "tensor w: missing data_offsets");
  expect_error(st_file(R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", {0, 0, 0, 0}),
               "tensor w: missing dtype");
  expect_error(st_file(R"({"w": {"dtype": 1, "shape": [1], "data_offsets": [0, 4]}})"),
               "tensor w: dtype is not a string");
  expect_error(st_file(R"({"w": {"dtype": "F32", "shape": 1, "data_offsets": [0, 4]}})"),
               "tensor w: shape is not an array");
  expect_error(st_file(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})"),
               "tensor w: data_offsets is not an array of two integers");
  expect_error(st_file(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, "4"]}})"),
               "tensor w: data_offsets entries must be integers, got \"4\"");
  expect_error(st_file(R"({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})"),
               "tensor w: shape entries must be integers, got 1.5");
}

TEST(SafetensorsTest, RejectsUnknownDtype) {
  expect_error(st_file(R"({"w": {"dtype": "F64x", "shape": [1], "data_offsets": [0, 8]}})",
                       std::vector<uint8_t>(8)),
               "tensor w: unsupported dtype \"F64x\"");
}

TEST(SafetensorsTest, RejectsShapesThatContradictTheData) {
  std::vector<uint8_t> data(64);
  expect_error(
      st_file(R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})", data),
      "tensor w: shape (2, 3) of F32 needs 24 bytes but data_offsets give 20");
  expect_error(
      st_file(R"({"w": {"dtype": "F32", "shape": [2, -3], "data_offsets": [0, 24]}})", data),
      "tensor w: negative shape entry -3");
  expect_error(st_file(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296],
                                 "data_offsets": [0, 24]}})",
                       data),
               "tensor w: shape (4294967296, 4294967296)... has too many elements");
  expect_error(st_file(R"({"w": {"dtype": "F32", "shape": [4611686018427387904],
                                 "data_offsets": [0, 24]}})",
                       data),
               "tensor w: shape (4611686018427387904,) of F32 is too large");
  expect_error(
      st_file(R"({"w": {"dtype": "Q4_0", "shape": [32, 3], "data_offsets": [0, 54]}})",
              std::vector<uint8_t>(54)),
      "tensor w: shape (32, 3) of Q4_0 has rows that are not a whole number of 32-element");
}

TEST(SafetensorsTest, RejectsOffsetsOutsideTheData) {
  std::vector<uint8_t> data(16);
  expect_error(st_file(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}})", data),
               "tensor w: data_offsets [12, 20] run past the end of the data (16 bytes");
  expect_error(st_file(R"({"w": {"dtype": "F32", "shape": [2],
                                 "data_offsets": [18446744073709551615, 7]}})",
                       data),
               "tensor w: data_offsets [18446744073709551615, 7] end before they begin");
  expect_error(st_file(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})", data),
               "tensor w: negative data_offsets entry -4");
  expect_error(st_file(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                           "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                       data),
               "tensor b: data_offsets [4, 12] overlap tensor a");
}

TEST(SafetensorsTest, RejectsTruncatedFiles) {
  fs::path dir = test::temp_dir();
  std::string path = (dir / "m.safetensors").string();
  write_safetensors(sample_map(), path);
  std::vector<uint8_t> file = test::read_bytes(path);
  std::vector<uint8_t> cut(file.begin(), file.end() - 1);
  expect_error(cut, "tensor b.q4: data_offsets [");
  expect_error(cut, "run past the end of the data");
  cut.resize(100);
  expect_error(cut, "exceeds the file size (100 bytes)");
  cut.resize(7);
  expect_error(cut, "too short");
  // Every shorter prefix fails cleanly.
  for (size_t n = 0; n < file.size(); ++n)
    EXPECT_NE(read_error({file.begin(), file.begin() + ptrdiff_t(n)}), "") << n;
}

TEST(SafetensorsTest, RoundTripReferenceCheckpoints) {
  RWKV_REQUIRE_SHARED();
  fs::path dir = test::temp_dir();
  for (const char* name : {"rwkv6-ref-bf16", "rwkv6-ref-fp32"}) {
    fs::path src = test::shared_dir() / "testdata/reference/models" / (std::string(name) + ".pth");
    TensorMap m = read_tensor_map(src.string());
    ASSERT_GT(m.size(), 0u);
    std::string out = (dir / (std::string(name) + ".safetensors")).string();
    write_safetensors(m, out);
    TensorMap back = read_tensor_map(out);
    EXPECT_EQ(back.format, "safetensors");
    expect_same(m, back);
  }
}

TEST(SafetensorsTest, WriteIntoMissingDirectoryFails) {
  fs::path dir = test::temp_dir();
  std::string path = (dir / "no-such-dir" / "m.safetensors").string();
  try {
    write_safetensors(sample_map(), path);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
    EXPECT_NE(msg.find("No such file or directory"), std::string::npos) << msg;
  }
  EXPECT_TRUE(dir_entries(dir).empty());
}

TEST(SafetensorsTest, WriteReplacesExistingFileAtomically) {
  fs::path dir = test::temp_dir();
  std::string path = (dir / "m.safetensors").string();
  test::write_bytes(path, {'o', 'l', 'd'});
  TensorMap m = sample_map();
  write_safetensors(m, path);
  expect_same(m, read_tensor_map(path));
  EXPECT_EQ(dir_entries(dir), std::vector<std::string>{"m.safetensors"});

  // A second write over a complete file replaces it too.
  TensorMap small;
  small.add_owned("only", DType::F32, {1});
  write_safetensors(small, path);
  expect_same(small, read_tensor_map(path));
  EXPECT_EQ(dir_entries(dir), std::vector<std::string>{"m.safetensors"});
}

TEST(SafetensorsTest, FailedWriteLeavesTargetUntouched) {
  fs::path dir = test::temp_dir();
  std::string path = (dir / "m.safetensors").string();
  const std::vector<uint8_t> old = {'o', 'l', 'd', ' ', 'd', 'a', 't', 'a'};
  test::write_bytes(path, old);

  // Fail in the middle of writing the data: cap the file size this process may write.
  struct rlimit saved {};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
  struct rlimit cap = saved;
  cap.rlim_cur = 100;
  auto old_handler = signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &cap), 0);
  std::string msg;
  try {
    write_safetensors(sample_map(), path);
  } catch (const Error& e) {
    msg = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &saved);
  signal(SIGXFSZ, old_handler);
  EXPECT_EQ(msg.rfind(path + ": write failed", 0), 0u) << msg;
  EXPECT_EQ(test::read_bytes(path), old);
  EXPECT_EQ(dir_entries(dir), std::vector<std::string>{"m.safetensors"});

  // Fail at the rename: the target is a non-empty directory.
  fs::path target = dir / "taken";
  fs::create_directories(target / "inside");
  EXPECT_THROW(write_safetensors(sample_map(), target.string()), Error);
  EXPECT_TRUE(fs::is_directory(target / "inside"));
  EXPECT_EQ(dir_entries(dir), (std::vector<std::string>{"m.safetensors", "taken"}));
}

// I8 tensors travel with `<name>_scale` (F32, one per row): written before the values, folded
// back into Tensor::row_scale on reading, and not listed as a tensor of their own.
TEST(SafetensorsTest, I8RowScalesRoundTrip) {
  fs::path dir = test::temp_dir();
  std::string path = (dir / "m.safetensors").string();
  TensorMap m;
  Tensor& w = m.add_owned("w.weight", DType::I8, {3, 32});
  for (uint64_t i = 0; i < w.nbytes; ++i) const_cast<uint8_t*>(w.data)[i] = uint8_t(i * 37);
  const std::vector<float> scales = {0.5f, 0.25f, 2.0f};
  w.row_scale = scales.data();
  m.add_owned("v", DType::F16, {3});
  write_safetensors(m, path);

  const nlohmann::json h = header_of(test::read_bytes(path));
  EXPECT_EQ(h["w.weight_scale"]["dtype"], "F32");
  EXPECT_EQ(h["w.weight_scale"]["shape"], nlohmann::json::array({3}));
  EXPECT_EQ(h["w.weight_scale"]["data_offsets"], nlohmann::json::array({0, 12}));
  EXPECT_EQ(h["w.weight"]["dtype"], "I8");
  EXPECT_EQ(h["w.weight"]["data_offsets"], nlohmann::json::array({12, 108}));

  const TensorMap back = read_safetensors(map_file(path), path);
  EXPECT_EQ(back.names(), (std::vector<std::string>{"w.weight", "v"}));
  const Tensor& r = back.at("w.weight");
  ASSERT_NE(r.row_scale, nullptr);
  EXPECT_EQ(std::vector<float>(r.row_scale, r.row_scale + 3), scales);
  const std::vector<float> values = to_f32(r);
  EXPECT_EQ(values[32], 0.25f * float(int8_t(uint8_t(32 * 37))));
  EXPECT_EQ(values[95], 2.0f * float(int8_t(uint8_t(95 * 37))));
}

// Scales that sit at an address not a multiple of 4 are read through an aligned copy.
TEST(SafetensorsTest, I8ScalesAtAnUnalignedOffset) {
  std::string header = R"({"pad": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]},)"
                       R"( "w_scale": {"dtype": "F32", "shape": [2, 1], "data_offsets": [2, 10]},)"
                       R"( "w": {"dtype": "I8", "shape": [2, 32], "data_offsets": [10, 74]}})";
  // The data follows the 8-byte length and the header in a buffer from operator new (aligned).
  while ((8 + header.size() + 2) % 4 != 1) header += ' ';
  std::vector<uint8_t> data(74);
  const float s[2] = {3.0f, -0.5f};
  std::memcpy(data.data() + 2, s, 8);
  data[10] = uint8_t(-5);
  data[42] = 7;
  const TensorMap m = read_safetensors(bytes_of(st_file(header, data)), kBadPath);
  const Tensor& w = m.at("w");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w.row_scale) % 4, 0u);
  const std::vector<float> v = to_f32(w);
  EXPECT_EQ(v[0], -15.0f);
  EXPECT_EQ(v[32], -3.5f);
  EXPECT_FALSE(m.contains("w_scale"));
}

TEST(SafetensorsTest, RejectsI8WithoutUsableScales) {
  const std::vector<uint8_t> data(64 + 8);
  expect_error(
      st_file(R"({"w": {"dtype": "I8", "shape": [2, 32], "data_offsets": [0, 64]}})", data),
      "tensor w: I8 tensor without w_scale (its per-row float32 scales)");
  expect_error(st_file(R"({"w": {"dtype": "I8", "shape": [2, 32], "data_offsets": [0, 64]},)"
                       R"( "w_scale": {"dtype": "F16", "shape": [2], "data_offsets": [64, 68]}})",
                       data),
               "tensor w_scale: row scales of an I8 tensor with 2 rows must be 2 F32 values, got "
               "shape (2,) of F16");
  expect_error(st_file(R"({"w": {"dtype": "I8", "shape": [2, 32], "data_offsets": [0, 64]},)"
                       R"( "w_scale": {"dtype": "F32", "shape": [1], "data_offsets": [64, 68]}})",
                       data),
               "must be 2 F32 values, got shape (1,) of F32");
  expect_error(
      st_file(R"({"w": {"dtype": "I8", "shape": [2, 30], "data_offsets": [0, 60]}})", data),
      "tensor w: shape (2, 30) of I8 has rows that are not a multiple of 32 values");
}

TEST(SafetensorsTest, WriteRejectsI8WithoutScales) {
  fs::path dir = test::temp_dir();
  TensorMap m;
  m.add_owned("w", DType::I8, {1, 32});
  try {
    write_safetensors(m, (dir / "m.safetensors").string());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("I8 tensor w has no row scales"), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(dir_entries(dir).empty());
}

TEST(SafetensorsTest, WriteRejectsInconsistentTensors) {
  fs::path dir = test::temp_dir();
  std::string path = (dir / "m.safetensors").string();
  TensorMap m;
  std::vector<uint8_t> buf(8);
  Tensor t;
  t.dtype = DType::F32;
  t.shape = {3};
  t.data = buf.data();
  t.nbytes = 8;
  m.add("w", t);
  try {
    write_safetensors(m, path);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor w has 8 bytes, which do not match its shape (3,)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(dir_entries(dir).empty());
}

}  // namespace
}  // namespace rwkv

// A vector that grows moves (never copies) its maps: a copy's tensors would point into the
// buffers of the original, freed with it.
TEST(TensorMapTest, OwnedTensorsSurviveAGrowingVector) {
  static_assert(!std::is_copy_constructible_v<rwkv::TensorMap>);
  std::vector<rwkv::TensorMap> maps;
  for (int i = 0; i < 64; ++i) {
    rwkv::TensorMap map;
    rwkv::Tensor& t = map.add_owned("v", rwkv::DType::F32, {1024});
    reinterpret_cast<float*>(const_cast<uint8_t*>(t.data))[1023] = float(i);
    maps.push_back(std::move(map));
  }
  for (int i = 0; i < 64; ++i)
    EXPECT_EQ(reinterpret_cast<const float*>(maps[size_t(i)].at("v").data)[1023], float(i));
}
