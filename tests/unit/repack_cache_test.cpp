// The repack cache: the file format alone (round trip, stale and damaged files), and models
// loaded through it (built once, then mapped, with the same logits as repacking in memory).
#include "io/repack_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/mapped_file.h"
#include "engine/quantize.h"
#include "io/readers.h"
#include "kernels/int8.h"
#include "kernels/kernels.h"
#include "model/init.h"
#include "model/weights.h"
#include "rwkv/model.h"
#include "test_util.h"

namespace rwkv::test {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

void write_bytes(const fs::path& p, const std::vector<uint8_t>& bytes) {
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

struct Written {
  fs::path path;
  RepackSource source{123456, 789, 0xfeedull, 1};
  std::vector<uint8_t> a = std::vector<uint8_t>(5000), b = std::vector<uint8_t>(70);
};

Written write_two(const fs::path& dir) {
  Written w;
  for (size_t i = 0; i < w.a.size(); ++i) w.a[i] = uint8_t(i * 7);
  for (size_t i = 0; i < w.b.size(); ++i) w.b[i] = uint8_t(200 - i);
  w.path = dir / "sub" / "m.repack";  // the directory is created
  const RepackEntry entries[] = {{"blocks.0.att.key.weight", DType::Q4_0, 16, 64, w.a},
                                 {"head.weight", DType::Q8_0, 2, 32, w.b}};
  write_repack_cache(w.path.string(), w.source, entries);
  return w;
}

TEST(RepackCache, RoundTripsEveryEntryAtAPageAlignedOffset) {
  const Written w = write_two(temp_dir());
  std::string why;
  const RepackCache cache = RepackCache::open(w.path.string(), w.source, &why);
  EXPECT_EQ(why, "");
  ASSERT_FALSE(cache.empty());
  const uint8_t* a = cache.find("blocks.0.att.key.weight", DType::Q4_0, 16, 64, w.a.size());
  const uint8_t* b = cache.find("head.weight", DType::Q8_0, 2, 32, w.b.size());
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(std::vector<uint8_t>(a, a + w.a.size()), w.a);
  EXPECT_EQ(std::vector<uint8_t>(b, b + w.b.size()), w.b);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 4096, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b) % 4096, 0u);
  // Another dtype, shape or size is not the same tensor.
  EXPECT_EQ(cache.find("head.weight", DType::Q4_0, 2, 32, w.b.size()), nullptr);
  EXPECT_EQ(cache.find("head.weight", DType::Q8_0, 3, 32, w.b.size()), nullptr);
  EXPECT_EQ(cache.find("head.weight", DType::Q8_0, 2, 32, w.b.size() + 1), nullptr);
  EXPECT_EQ(cache.find("emb.weight", DType::Q8_0, 2, 32, w.b.size()), nullptr);
  // read_into copies from the file, any piece of an entry.
  std::vector<uint8_t> piece(1000);
  ASSERT_TRUE(cache.read_into(a + 3000, piece.size(), piece.data()));
  EXPECT_TRUE(std::equal(piece.begin(), piece.end(), w.a.begin() + 3000));
  ASSERT_TRUE(cache.read_into(b, w.b.size(), piece.data()));
  EXPECT_TRUE(std::equal(w.b.begin(), w.b.end(), piece.begin()));
  // From the file that was validated, even after another writer replaced the path.
  Written other = w;
  std::fill(other.b.begin(), other.b.end(), uint8_t(1));
  const RepackEntry replacement[] = {{"head.weight", DType::Q8_0, 2, 32, other.b}};
  write_repack_cache(w.path.string(), w.source, replacement);
  std::fill(piece.begin(), piece.end(), uint8_t(0));
  ASSERT_TRUE(cache.read_into(b, w.b.size(), piece.data()));
  EXPECT_TRUE(std::equal(w.b.begin(), w.b.end(), piece.begin()));
  // Past the end of the file, or from bytes that are not a mapping: false.
  EXPECT_FALSE(cache.read_into(b, size_t(1) << 30, piece.data()));
  const std::vector<uint8_t> bytes = read_bytes(w.path);
  const RepackCache in_memory =
      RepackCache::read({{bytes.data(), bytes.size()}, nullptr, false}, "mem", w.source, nullptr);
  const uint8_t* in_memory_b = in_memory.find("head.weight", DType::Q8_0, 2, 32, w.b.size());
  ASSERT_NE(in_memory_b, nullptr);
  EXPECT_FALSE(in_memory.read_into(in_memory_b, w.b.size(), piece.data()));
}

TEST(RepackCache, AnotherSourceLayoutOrFormatIsStaleWithoutComplaint) {
  const Written w = write_two(temp_dir());
  for (int field = 0; field < 4; ++field) {
    RepackSource other = w.source;
    if (field == 0) other.size += 1;
    if (field == 1) other.mtime_ns += 1;
    if (field == 2) other.fingerprint ^= 1;
    if (field == 3) other.layout += 1;
    std::string why;
    EXPECT_TRUE(RepackCache::open(w.path.string(), other, &why).empty()) << field;
    EXPECT_EQ(why, "") << field;
  }
  // A file of another format version (same length, so nothing else moves).
  std::vector<uint8_t> bytes = read_bytes(w.path);
  const std::string format = "\"format\":2";
  auto at = std::search(bytes.begin(), bytes.end(), format.begin(), format.end());
  ASSERT_NE(at, bytes.end());
  at[format.size() - 1] = '1';
  write_bytes(w.path, bytes);
  std::string why;
  EXPECT_TRUE(RepackCache::open(w.path.string(), w.source, &why).empty());
  EXPECT_EQ(why, "");
  EXPECT_TRUE(RepackCache::open((temp_dir() / "missing").string(), w.source, &why).empty());
  EXPECT_EQ(why, "");
}

TEST(RepackCache, DamagedFilesAreIgnoredAndNamed) {
  const Written w = write_two(temp_dir());
  const std::vector<uint8_t> good = read_bytes(w.path);
  uint64_t header_len;
  std::memcpy(&header_len, good.data() + 8, 8);
  const auto damaged = [&](std::vector<uint8_t> bytes, const std::string& expect) {
    write_bytes(w.path, bytes);
    std::string why;
    EXPECT_TRUE(RepackCache::open(w.path.string(), w.source, &why).empty()) << expect;
    EXPECT_NE(why.find(expect), std::string::npos) << why;
    EXPECT_NE(why.find(w.path.string()), std::string::npos) << why;
  };
  damaged({}, "not a repack cache");
  damaged(std::vector<uint8_t>(good.begin(), good.begin() + 12), "not a repack cache");
  std::vector<uint8_t> bad_magic = good;
  bad_magic[0] = 'X';
  damaged(bad_magic, "not a repack cache");
  damaged(std::vector<uint8_t>(good.begin(), good.begin() + 16 + ptrdiff_t(header_len) - 1),
          "truncated header");
  // The data cut short: the last tensor's bytes run past the end.
  damaged(std::vector<uint8_t>(good.begin(), good.end() - 1), "truncated at head.weight");
  std::vector<uint8_t> bad_json = good;
  bad_json[16] = '[';
  damaged(bad_json, "corrupt header");
  std::vector<uint8_t> huge_len = good;
  std::memset(huge_len.data() + 8, 0xff, 8);
  damaged(huge_len, "truncated header");
}

TEST(RepackCache, UnwritablePlacesThrowAndLeaveNothingBehind) {
  const fs::path dir = temp_dir();
  write_bytes(dir / "file", {1, 2, 3});
  const RepackEntry entry{"x", DType::Q4_0, 16, 32, {}};
  EXPECT_THROW(write_repack_cache((dir / "file" / "sub" / "c.repack").string(), {}, {&entry, 1}),
               Error);
  EXPECT_EQ(read_bytes(dir / "file"), (std::vector<uint8_t>{1, 2, 3}));
}

// Two loads of one model in one process (a server, say) may write its cache at the same time:
// each writes a whole file of its own and the last rename wins.
TEST(RepackCache, ConcurrentWritersOfOnePathLeaveAWholeFile) {
  const Written w = write_two(temp_dir());
  const RepackEntry entries[] = {{"blocks.0.att.key.weight", DType::Q4_0, 16, 64, w.a},
                                 {"head.weight", DType::Q8_0, 2, 32, w.b}};
  const auto write_many = [&] {
    for (int i = 0; i < 20; ++i) write_repack_cache(w.path.string(), w.source, entries);
  };
  std::thread other(write_many);
  write_many();
  other.join();
  const RepackCache cache = RepackCache::open(w.path.string(), w.source, nullptr);
  const uint8_t* a = cache.find("blocks.0.att.key.weight", DType::Q4_0, 16, 64, w.a.size());
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(std::vector<uint8_t>(a, a + w.a.size()), w.a);
  for (const auto& e : fs::directory_iterator(w.path.parent_path()))
    EXPECT_EQ(e.path(), w.path) << "a temporary was left behind";
}

TEST(RepackCache, FileNamesFollowTheModelsAbsolutePath) {
  const std::string a = repack_cache_file("/c", "/models/a.bin");
  EXPECT_EQ(a.rfind("/c/a.bin.", 0), 0u) << a;
  EXPECT_EQ(a.substr(a.size() - 7), ".repack");
  EXPECT_NE(a, repack_cache_file("/c", "/other/a.bin"));
  EXPECT_EQ(a, repack_cache_file("/c", "/models/./a.bin"));
}

// The loader packs a large matrix on several threads (each its own range of groups): the bytes
// must be those of one pass over all groups.
TEST(RepackedMatrix, PackedOnSeveralThreadsEqualsOnePass) {
  if (!kernels::packs_int8_groups())
    GTEST_SKIP() << "the int8 kernel here reads rows as stored (no AVX-512 VNNI)";
  for (DType dtype : {DType::Q4_0, DType::Q5_1, DType::Q8_0}) {
    TensorMap map;
    const int64_t rows = 4096 + 5, cols = 64;  // 257 groups, the last one short
    Tensor& w = map.add_owned("w", dtype, {rows, cols});
    uint8_t* p = const_cast<uint8_t*>(w.data);
    for (uint64_t i = 0; i < w.nbytes; ++i) p[i] = uint8_t(i * 2654435761u >> 13);
    ModelInfo info;
    info.int8_activations = true;
    WeightLoader loader(map, info);
    const Tensor t = loader.matrix("w", {rows, cols});
    ASSERT_NE(t.int8_groups, nullptr);
    std::vector<uint8_t> one_pass(size_t(kernels::int8_groups_bytes(w)));
    kernels::pack_int8_groups(w, 0, (rows + 15) / 16, one_pass.data());
    EXPECT_EQ(0, std::memcmp(t.int8_groups, one_pass.data(), one_pass.size())) << dtype_name(dtype);
    ModelInfo done;
    loader.finish(done);
    EXPECT_EQ(done.repacked, "built");
  }
}

// Through the loader: needs the packed kernel (AVX-512 VNNI) and the tiny models.
class RepackedModel : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!kernels::packs_int8_groups())
      GTEST_SKIP() << "the int8 kernel here reads rows as stored (no AVX-512 VNNI)";
    RWKV_REQUIRE_SHARED();
    dir_ = temp_dir();
    // A copy, so that the test can change its modification time.
    model_ = dir_ / "tiny-Q5_1.bin";
    fs::copy_file(shared_dir() / "testdata/tiny-rwkv/tiny-rwkv-7v0-834K-Q5_1.bin", model_);
  }

  std::unique_ptr<Model> load(const std::string& cache_dir) const {
    LoadOptions options;
    options.int8_activations = true;
    options.repack_cache_dir = cache_dir;
    return Model::load(model_.string(), options);
  }

  fs::path dir_, model_;
  const std::vector<int> tokens_ = {34, 105, 110, 32, 116, 104, 101};
};

TEST_F(RepackedModel, IsBuiltOnceThenReadWithTheSameLogits) {
  const std::string cache_dir = (dir_ / "cache").string();
  const auto in_memory = load("none");
  EXPECT_EQ(in_memory->info().repacked, "built");
  EXPECT_EQ(in_memory->info().repack_cache, "");

  const auto first = load(cache_dir);
  EXPECT_EQ(first->info().repacked, "built");
  const std::string file = first->info().repack_cache;
  ASSERT_TRUE(fs::exists(file)) << file;
  EXPECT_EQ(file.rfind(cache_dir, 0), 0u);
  const auto written = fs::last_write_time(file);

  const auto second = load(cache_dir);
  EXPECT_EQ(second->info().repacked, "cached");
  EXPECT_EQ(second->info().repack_cache, file);
  EXPECT_TRUE(second->info().warnings.empty());
  EXPECT_EQ(fs::last_write_time(file), written);

  const RunResult want = run_tokens(*in_memory, tokens_);
  EXPECT_EQ(run_tokens(*first, tokens_).logits, want.logits);
  EXPECT_EQ(run_tokens(*second, tokens_).logits, want.logits);
  EXPECT_EQ(run_tokens(*second, tokens_).state, want.state);
  {
    LoadOptions mapping;
    mapping.int8_activations = mapping.map_repack_cache = true;
    mapping.repack_cache_dir = cache_dir;
    const auto mapped = Model::load(model_.string(), mapping);
    EXPECT_EQ(mapped->info().repacked, "mapped");
    EXPECT_EQ(run_tokens(*mapped, tokens_).logits, want.logits);
    EXPECT_EQ(fs::last_write_time(file), written);
  }
  // The cache was read, not mapped: a model loaded from it no longer needs the file.
  fs::resize_file(file, 0);
  EXPECT_EQ(run_tokens(*second, tokens_).logits, want.logits);
  // The exact path does not repack.
  EXPECT_EQ(Model::load(model_.string())->info().repacked, "");
}

TEST_F(RepackedModel, AChangedModelOrADamagedCacheIsRebuilt) {
  const std::string cache_dir = (dir_ / "cache").string();
  const std::string file = load(cache_dir)->info().repack_cache;
  const RunResult want = run_tokens(*load("none"), tokens_);

  fs::last_write_time(model_, fs::last_write_time(model_) + std::chrono::seconds(5));
  const auto touched = load(cache_dir);
  EXPECT_EQ(touched->info().repacked, "built");
  EXPECT_TRUE(touched->info().warnings.empty());
  EXPECT_EQ(load(cache_dir)->info().repacked, "cached");

  fs::resize_file(file, fs::file_size(file) / 2);
  const auto repaired = load(cache_dir);
  EXPECT_EQ(repaired->info().repacked, "built");
  ASSERT_EQ(repaired->info().warnings.size(), 1u);
  EXPECT_NE(repaired->info().warnings[0].find("truncated"), std::string::npos)
      << repaired->info().warnings[0];
  EXPECT_EQ(run_tokens(*repaired, tokens_).logits, want.logits);
  EXPECT_EQ(load(cache_dir)->info().repacked, "cached");
}

TEST_F(RepackedModel, AnUnwritableCacheDirectoryOnlyWarns) {
  write_bytes(dir_ / "not-a-dir", {0});
  const auto model = load((dir_ / "not-a-dir" / "cache").string());
  EXPECT_EQ(model->info().repacked, "built");
  EXPECT_EQ(model->info().repack_cache, "");
  ASSERT_EQ(model->info().warnings.size(), 1u);
  EXPECT_NE(model->info().warnings[0].find("repacked weights not cached"), std::string::npos)
      << model->info().warnings[0];
  EXPECT_EQ(run_tokens(*model, tokens_).logits, run_tokens(*load("none"), tokens_).logits);
}

// dir/m.safetensors: a random RWKV-7 of 512 x n_layer (vocab 1024) in Q8_0, 4 MB a layer.
fs::path write_q8_0_model(const fs::path& dir, int n_layer, uint64_t seed) {
  InitOptions init;
  init.arch = "7";
  init.n_embd = 512;
  init.n_layer = n_layer;
  init.n_vocab = 1024;
  init.seed = seed;
  const fs::path path = dir / "m.safetensors";
  write_safetensors(
      quantize_model(std::make_shared<const TensorMap>(init_model(init)), DType::Q8_0),
      path.string());
  return path;
}

// A cache of whole 2 MiB pages: mapped, it says how much of it the kernel maps by 2 MiB pages
// (all of it where the file system keeps files in large folios), with the logits of reading it
// and of repacking in memory.
TEST(RepackedLargerModel, MappedSaysHowMuchIsInHugePagesAndEqualsRead) {
  if (!kernels::packs_int8_groups())
    GTEST_SKIP() << "the int8 kernel here reads rows as stored (no AVX-512 VNNI)";
  const fs::path dir = temp_dir(), model = write_q8_0_model(dir, 4, 5);
  const auto load = [&](const std::string& cache_dir, bool map) {
    LoadOptions options;
    options.int8_activations = true;
    options.repack_cache_dir = cache_dir;
    options.map_repack_cache = map;
    return Model::load(model.string(), options);
  };
  const std::string cache_dir = (dir / "cache").string();
  const auto built = load(cache_dir, false);
  ASSERT_EQ(built->info().repacked, "built");
  EXPECT_EQ(built->info().repack_huge_bytes, 0u);
  const uint64_t size = fs::file_size(built->info().repack_cache), huge = uint64_t(2) << 20;
  ASSERT_GE(size, 4 * huge);

  // The same bytes written again 4 KiB at a time: the page cache then holds them in small
  // folios, as it may after the cache was read under memory pressure.
  write_by_small_pages(built->info().repack_cache, read_bytes(built->info().repack_cache));
  const auto mapped = load(cache_dir, true);
  const auto read = load(cache_dir, false);
  EXPECT_EQ(mapped->info().repacked, "mapped");
  EXPECT_EQ(mapped->info().repack_huge_bytes % huge, 0u);
  EXPECT_LE(mapped->info().repack_huge_bytes, size);
  EXPECT_EQ(read->info().repacked, "cached");
  EXPECT_EQ(read->info().repack_huge_bytes, 0u);
  std::printf("repack cache of %.1f MB, %.1f MB of it mapped by 2 MiB pages\n", double(size) / 1e6,
              double(mapped->info().repack_huge_bytes) / 1e6);
  // Where the file system keeps files in 2 MiB folios (an exact load then maps the model file,
  // just written, by 2 MiB pages), those small folios are read back once and the cache is mapped
  // by 2 MiB pages in full (a 1.5B model's cache was found 2% so, and generated 5-11% slower).
  if (Model::load(model.string())->info().file_huge_bytes > 0) {
    EXPECT_EQ(mapped->info().repack_huge_bytes, size / huge * huge);
  }
  const std::vector<int> tokens = {3, 700, 41, 1000, 5};
  const RunResult want = run_tokens(*load("none", false), tokens);
  EXPECT_EQ(run_tokens(*built, tokens).logits, want.logits);
  EXPECT_EQ(run_tokens(*mapped, tokens).logits, want.logits);
  EXPECT_EQ(run_tokens(*read, tokens).logits, want.logits);
}

// Resident bytes of this process's mappings of `path` (the Rss lines of its /proc/self/smaps
// entries).
uint64_t resident_bytes_of(const fs::path& path) {
  std::ifstream smaps("/proc/self/smaps");
  uint64_t total = 0;
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    unsigned long kb;
    if (line.find('-') < line.find(' ') && std::isxdigit(static_cast<unsigned char>(line[0])))
      inside =
          line.size() >= path.string().size() &&
          line.compare(line.size() - path.string().size(), std::string::npos, path.string()) == 0;
    else if (inside && std::sscanf(line.c_str(), "Rss: %lu kB", &kb) == 1)
      total += uint64_t(kb) * 1024;
  }
  return total;
}

// After an int8 load, the model file's copy of the repacked matrices is not resident, however
// loading read the small tensors between them: only the 2 MiB blocks holding what generation
// reads from the file (here the embedding) stay mapped.
TEST(RepackedLargerModel, LeavesOnlyWhatRunsFromTheFileResident) {
  if (!kernels::packs_int8_groups())
    GTEST_SKIP() << "the int8 kernel here reads rows as stored (no AVX-512 VNNI)";
  const fs::path dir = temp_dir(), model = write_q8_0_model(dir, 6, 6);
  const uint64_t file_bytes = fs::file_size(model), huge = uint64_t(2) << 20;
  ASSERT_GE(file_bytes, 8 * huge);
  LoadOptions options;
  options.int8_activations = true;
  options.repack_cache_dir = (dir / "cache").string();
  for (const char* how : {"built", "cached"}) {
    const auto loaded = Model::load(model.string(), options);
    ASSERT_EQ(loaded->info().repacked, how);
    // The embedding (1024 x 512 F16, 1 MiB) lies in at most two 2 MiB blocks.
    const uint64_t after_load = resident_bytes_of(model);
    EXPECT_LE(after_load, 2 * huge) << how << ": " << after_load << " of " << file_bytes;
    run_tokens(*loaded, {3, 700, 41, 1000, 5});
    EXPECT_LE(resident_bytes_of(model), 2 * huge) << how;
  }
}

}  // namespace
}  // namespace rwkv::test
