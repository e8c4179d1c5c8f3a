// rwkv.cpp .bin reader: bad files get clear errors, legacy quantized blocks decode, and the
// converter's transforms are undone (checked against the official-layout names and shapes).
#include <gtest/gtest.h>

#include <cstring>
#include <memory>

#include "core/dtype.h"
#include "io/readers.h"
#include "model/registry.h"
#include "test_util.h"

namespace rwkv::test {
namespace {

// A parsed .bin file that tests edit and write back.
struct BinParam {
  int32_t type;
  std::vector<int32_t> ggml_shape;  // innermost first, as stored
  std::string name;
  std::vector<uint8_t> data;
};
struct BinFile {
  int32_t header[6];
  std::vector<BinParam> params;

  std::vector<uint8_t> bytes() const {
    std::vector<uint8_t> out(reinterpret_cast<const uint8_t*>(header),
                             reinterpret_cast<const uint8_t*>(header) + 24);
    auto put = [&](int32_t v) {
      out.insert(out.end(), reinterpret_cast<uint8_t*>(&v), reinterpret_cast<uint8_t*>(&v) + 4);
    };
    for (const BinParam& p : params) {
      put(int32_t(p.ggml_shape.size()));
      put(int32_t(p.name.size()));
      put(p.type);
      for (int32_t d : p.ggml_shape) put(d);
      out.insert(out.end(), p.name.begin(), p.name.end());
      out.insert(out.end(), p.data.begin(), p.data.end());
    }
    return out;
  }
  BinParam& find(const std::string& name) {
    for (BinParam& p : params)
      if (p.name == name) return p;
    throw std::runtime_error("no " + name);
  }
};

// Parses an FP32/FP16 file (enough for the edits these tests make).
BinFile parse(const std::vector<uint8_t>& b) {
  BinFile f;
  std::memcpy(f.header, b.data(), 24);
  size_t pos = 24;
  auto get = [&] {
    int32_t v;
    std::memcpy(&v, b.data() + pos, 4);
    pos += 4;
    return v;
  };
  while (pos < b.size()) {
    BinParam p;
    int32_t dims = get(), key_len = get();
    p.type = get();
    size_t n = 1;
    for (int d = 0; d < dims; ++d) {
      p.ggml_shape.push_back(get());
      n *= size_t(p.ggml_shape.back());
    }
    p.name.assign(reinterpret_cast<const char*>(b.data() + pos), size_t(key_len));
    pos += size_t(key_len);
    size_t bytes = n * (p.type == 0 ? 4 : 2);
    p.data.assign(b.begin() + long(pos), b.begin() + long(pos + bytes));
    pos += bytes;
    f.params.push_back(std::move(p));
  }
  return f;
}

class RwkvCppBin : public ::testing::Test {
 protected:
  void SetUp() override {
    if (shared_dir().empty()) GTEST_SKIP() << "SKIPPED: ../shared/testdata not found";
    original_ = read_bytes(shared_dir() / "testdata/tiny-rwkv/tiny-rwkv-4v0-660K-FP32.bin");
    dir_ = temp_dir();
  }
  // Writes `bytes` to a temp file and returns the error Model::load raises (or "" if none).
  std::string load_error(const std::vector<uint8_t>& bytes) {
    const std::string path = (dir_ / "model.bin").string();
    write_bytes(path, bytes);
    try {
      Model::load(path);
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_EQ(msg.find('\n'), std::string::npos) << "error should be one line";
      EXPECT_NE(msg.find(path), std::string::npos) << "error should name the file: " << msg;
      return msg;
    }
    return "";
  }
  std::vector<uint8_t> original_;
  std::filesystem::path dir_;
};

TEST_F(RwkvCppBin, TruncatedFile) {
  for (size_t cut : {size_t(10), size_t(24), size_t(40), original_.size() / 2, original_.size() - 1}) {
    std::vector<uint8_t> b(original_.begin(), original_.begin() + long(cut));
    std::string err = load_error(b);
    EXPECT_NE(err.find("truncated"), std::string::npos) << cut << ": " << err;
  }
}

TEST_F(RwkvCppBin, WrongMagic) {
  std::vector<uint8_t> b = original_;
  b[0] ^= 0xff;
  EXPECT_NE(load_error(b).find("unknown file format"), std::string::npos);
  Bytes bytes{{b.data(), b.size()}, nullptr};
  EXPECT_THROW(
      {
        try {
          read_rwkv_cpp_bin(bytes, "x.bin");
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("wrong magic"), std::string::npos);
          throw;
        }
      },
      Error);
}

TEST_F(RwkvCppBin, UnsupportedFileVersion) {
  BinFile f = parse(original_);
  f.header[1] = 102;
  EXPECT_NE(load_error(f.bytes()).find("unsupported rwkv.cpp file version 102"), std::string::npos);
}

TEST_F(RwkvCppBin, UnknownDtype) {
  BinFile f = parse(original_);
  f.find("blocks.0.att.key.weight").type = 5;
  EXPECT_NE(load_error(f.bytes()).find("tensor blocks.0.att.key.weight has unknown data type 5"),
            std::string::npos);
}

TEST_F(RwkvCppBin, ShapeContradictsHeader) {
  BinFile f = parse(original_);
  f.header[3] = 64;  // n_embed
  EXPECT_NE(load_error(f.bytes()).find("emb.weight has shape (256, 128) but the header says"),
            std::string::npos);
}

TEST_F(RwkvCppBin, ShapeContradictsModel) {
  BinFile f = parse(original_);
  BinParam& p = f.find("blocks.1.att.key.weight");
  p.ggml_shape = {64, 256};  // same bytes, wrong shape
  EXPECT_NE(load_error(f.bytes()).find("tensor blocks.1.att.key.weight has shape (256, 64), "
                                       "expected (128, 128)"),
            std::string::npos);
}

TEST_F(RwkvCppBin, MissingTensor) {
  BinFile f = parse(original_);
  std::erase_if(f.params, [](const BinParam& p) { return p.name == "blocks.2.ffn.value.weight"; });
  EXPECT_NE(load_error(f.bytes()).find("missing tensor blocks.2.ffn.value.weight"),
            std::string::npos);
}

TEST_F(RwkvCppBin, ExtraUnknownTensorIsAWarning) {
  BinFile f = parse(original_);
  f.params.push_back({0, {4}, "blocks.0.att.mystery", std::vector<uint8_t>(16, 0)});
  const std::string path = (dir_ / "extra.bin").string();
  write_bytes(path, f.bytes());
  auto model = Model::load(path);
  ASSERT_EQ(model->info().warnings.size(), 1u);
  EXPECT_EQ(model->info().warnings[0], "unused tensor blocks.0.att.mystery");
}

TEST_F(RwkvCppBin, UndoesConverterTransforms) {
  Bytes bytes{{original_.data(), original_.size()}, nullptr};
  TensorMap map = read_rwkv_cpp_bin(bytes, "tiny.bin");
  EXPECT_EQ(map.at("emb.weight").shape, (std::vector<int64_t>{256, 128}));
  EXPECT_EQ(map.at("blocks.0.att.time_mix_k").shape, (std::vector<int64_t>{1, 1, 128}));
  // RWKV-4 time_decay is stored as -exp(time_decay).
  BinFile f = parse(original_);
  float stored;
  std::memcpy(&stored, f.find("blocks.0.att.time_decay").data.data(), 4);
  EXPECT_FLOAT_EQ(to_f32(map.at("blocks.0.att.time_decay"))[0], std::log(-stored));
}

TEST_F(RwkvCppBin, Rwkv7PackedMixesAndLoraAreRestored) {
  auto b = read_bytes(shared_dir() / "testdata/tiny-rwkv/tiny-rwkv-7v0-834K-FP32.bin");
  Bytes bytes{{b.data(), b.size()}, nullptr};
  TensorMap map = read_rwkv_cpp_bin(bytes, "tiny7.bin");
  EXPECT_FALSE(map.contains("blocks.0.att.x_rwkvag"));
  EXPECT_EQ(map.at("blocks.3.att.x_g").shape, (std::vector<int64_t>{1, 1, 64}));
  EXPECT_EQ(map.at("blocks.3.att.w1").shape, (std::vector<int64_t>{64, 32}));  // (C, D)
  EXPECT_EQ(map.at("blocks.3.att.w2").shape, (std::vector<int64_t>{32, 64}));  // (D, C)
  EXPECT_EQ(map.at("blocks.3.att.r_k").shape, (std::vector<int64_t>{1, 64}));
  // x_g is the sixth row of the packed tensor.
  BinFile f = parse(b);
  float packed_g0;
  std::memcpy(&packed_g0, f.find("blocks.3.att.x_rwkvag").data.data() + 5 * 64 * 4, 4);
  EXPECT_EQ(to_f32(map.at("blocks.3.att.x_g"))[0], packed_g0);
}

// rwkv.cpp stores the LoRA matrices transposed: the reader records those bytes as such next to
// its canonical copy, and a model reads them there and frees the copy (held twice, rwkv.cpp's
// RWKV-6 1.6B files ran past the memory budget).
TEST_F(RwkvCppBin, LorasStoredTransposedAreReadInPlaceAndTheCopyReleased) {
  auto b = read_bytes(shared_dir() / "testdata/tiny-rwkv/tiny-rwkv-7v0-834K-FP32.bin");
  Bytes bytes{{b.data(), b.size()}, nullptr};
  auto map = std::make_shared<TensorMap>(read_rwkv_cpp_bin(bytes, "tiny7.bin"));
  const std::string name = "blocks.3.att.w1";
  const Tensor* stored = map->stored_transposed(name);
  ASSERT_NE(stored, nullptr);
  EXPECT_TRUE(stored->transposed);
  EXPECT_EQ(stored->shape, map->at(name).shape);  // (C, D) = (64, 32), bytes (D, C)
  // The file's own bytes, in place.
  EXPECT_TRUE(stored->data >= b.data() && stored->data + stored->nbytes <= b.data() + b.size());
  BinFile f = parse(b);
  const BinParam& param = f.find(name);
  ASSERT_EQ(stored->nbytes, param.data.size());
  EXPECT_EQ(0, std::memcmp(stored->data, param.data.data(), param.data.size()));
  const std::vector<float> canonical = to_f32(map->at(name)), file = to_f32(*stored);
  for (int64_t c = 0; c < 64; ++c)
    for (int64_t d = 0; d < 32; ++d) ASSERT_EQ(canonical[c * 32 + d], file[d * 64 + c]);
  auto model = build_model(map, {});
  for (const char* lora : {"w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2"})
    EXPECT_FALSE(map->contains(std::string("blocks.3.att.") + lora)) << lora;
  EXPECT_TRUE(map->contains("blocks.3.att.key.weight"));
}

// File version 100 stored Q4_0 with a float32 scale and element pairs sharing a byte.
TEST_F(RwkvCppBin, LegacyVersion100BlocksDecode) {
  BinFile f = parse(original_);
  BinParam& p = f.find("blocks.0.att.key.weight");  // (128, 128) FP32
  p.type = 2;                                        // Q4_0
  p.data.clear();
  const float d = 0.25f;
  for (int blk = 0; blk < 128 * 128 / 32; ++blk) {
    const uint8_t* dp = reinterpret_cast<const uint8_t*>(&d);
    p.data.insert(p.data.end(), dp, dp + 4);
    for (int j = 0; j < 16; ++j) p.data.push_back(uint8_t((j & 0xf) | ((15 - j) << 4)));
  }
  f.header[1] = 100;
  auto bytes_v100 = f.bytes();
  Bytes bytes{{bytes_v100.data(), bytes_v100.size()}, nullptr};
  TensorMap map = read_rwkv_cpp_bin(bytes, "legacy.bin");
  const Tensor& t = map.at("blocks.0.att.key.weight");
  EXPECT_EQ(t.dtype, DType::F32);
  std::vector<float> v = to_f32(t);
  for (int j = 0; j < 16; ++j) {
    EXPECT_FLOAT_EQ(v[size_t(2 * j)], float(j - 8) * d);
    EXPECT_FLOAT_EQ(v[size_t(2 * j + 1)], float(15 - j - 8) * d);
  }
  // The same bytes under version 101 are a different (18-byte block) layout: the file's sizes
  // no longer add up, which is reported, not misread.
  f.header[1] = 101;
  EXPECT_NE(load_error(f.bytes()), "");
}

}  // namespace
}  // namespace rwkv::test
