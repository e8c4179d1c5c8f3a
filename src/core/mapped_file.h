// Read-only memory map of a whole file, so weights are used in place without copying.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace rwkv {

// Bytes of an input plus whatever keeps them alive (a mapping, or an owned buffer).
struct Bytes {
  std::span<const uint8_t> data;
  std::shared_ptr<const void> owner;
  bool mapped = false;  // a read-only file mapping (map_file)
};

// Maps `path` read-only. Throws rwkv::Error naming the file when it cannot be opened.
// `huge_pages`: marks the mapping for transparent huge pages (MADV_HUGEPAGE), so that pages
// faulted in from the file come into the page cache as 2 MiB folios and are mapped as such,
// where the kernel and file system can (ext4 on Linux 6.16+, XFS, tmpfs with huge=).
Bytes map_file(const std::string& path, bool huge_pages = false);

// Faults in the pages of `ranges` (inside `file`, a map_file() mapping with huge_pages) and
// returns how many bytes of the mapping are mapped by 2 MiB pages (0 where that cannot be told).
// Where the page cache holds those ranges mostly in small folios (the file was written, or read
// without the hint) and the file system can hold them in 2 MiB folios (tried on one 2 MiB page
// first), they are dropped from the page cache and read back from the file, once, so that this
// load and later ones map them by 2 MiB pages. Ranges that together exceed 90% of physical
// memory are left alone (0).
uint64_t map_by_huge_pages(const Bytes& file, std::vector<std::span<const uint8_t>> ranges);

// Copies n bytes at `from`, inside `file` (a map_file() mapping), into `to` with pread from the
// mapped file itself, so the mapping's pages are never touched: no page faults, nothing added
// to the resident size. False when `file` is not a mapping or the read fails.
bool read_mapped(const Bytes& file, const uint8_t* from, size_t n, uint8_t* to);

// Asks the kernel to drop the file at `path` from the page cache (the pages no process maps), so
// that it is read back in large folios, which a mapping with huge_pages maps by 2 MiB pages. Only
// a hint: failures are ignored.
void evict_file_cache(const std::string& path);

// Drops the whole pages inside `bytes`, part of a read-only file mapping, from this process's
// resident memory (they are read back from the file if touched again): for weights that were
// copied into another layout.
void drop_mapped_pages(std::span<const uint8_t> bytes);

// drop_mapped_pages() for all of `file` (a map_file() mapping) but the 2 MiB-aligned blocks that
// hold any byte of `kept`: once the weights are loaded, what was read only while loading (small
// vectors copied out, whose 2 MiB folios map their neighbours too) leaves the resident size.
void drop_mapped_pages_outside(const Bytes& file, std::vector<std::span<const uint8_t>> kept);

}  // namespace rwkv
