// tests/fuzz/make_corpus.cpp — writes the seed corpus of one fuzz target from real, valid
// messages made by mproc itself (frames, ring records, task payloads, Pipe records, queue
// scripts, segments). Usage: make_corpus <target name> <output directory>.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <string_view>

#include "fd_passing.hpp"
#include "fuzz_types.hpp"
#include "launch/launcher.hpp"
#include "mproc/connection.hpp"
#include "mproc/detail/fd_transfer.hpp"
#include "mproc/detail/task_entry.hpp"
#include "mproc/pool.hpp"
#include "mproc/queue.hpp"
#include "mproc/shared_memory.hpp"
#include "mproc/sync.hpp"
#include "pool/worker_protocol.hpp"
#include "spsc_ring.hpp"

namespace {

using namespace mproc_fuzz;

std::string out_dir;

/// Writes <case>-<name>.bin holding the case byte and value's encoding.
template <std::size_t Case, class T>
void seed(const char* name, const T& value) {
  static_assert(std::is_same_v<T, typename std::tuple_element_t<Case, Cases>::type>);
  std::vector<std::byte> bytes{static_cast<std::byte>(Case)};
  mproc::serialize_to(bytes, value);
  const std::string path = out_dir + "/" + std::to_string(Case) + "-" + name + ".bin";
  std::ofstream file(path, std::ios::binary);
  file.write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
  if (!file) {
    std::cerr << "make_corpus: cannot write " << path << "\n";
    std::exit(1);
  }
}

void serialize_corpus() {
  seed<0>("string", std::string("hello, world"));
  seed<1>("ints", std::vector<int>{1, -1, 1 << 20});
  seed<2>("map", std::map<std::string, std::vector<double>>{{"pi", {3.14159}}, {"e", {2.7, 1.0}}});
  using V = std::variant<int, std::string, std::optional<bool>>;
  seed<3>("variant-int", V{42});
  seed<3>("variant-string", V{std::string("text")});
  seed<3>("variant-optional", V{std::optional<bool>(true)});
  seed<4>("tuple", std::make_tuple(7, std::string("seven"), std::vector<Point>{{1, 2}, {3, 4}},
                                   Color::green, true));
  seed<5>(
      "person",
      Person{
          "Ada", 36, {{"home", {1, 2}}}, std::set<std::string>{"math"}, {Color::red, Color::blue}});
  seed<6>("bools", std::vector<bool>{true, false, true});
  seed<7>("lists", std::list<std::deque<std::string>>{{"a", "b"}, {}, {"c"}});
  {
    auto list = std::make_unique<ListNode>();
    list->value = 1;
    list->next = std::make_unique<ListNode>();
    list->next->value = 2;
    seed<8>("linked-list", list);
  }
  {
    auto root = std::make_shared<Shared>();
    root->label = "root";
    root->child = std::make_shared<Shared>();
    root->child->label = "child";
    root->child->parent = root;
    seed<9>("shared", std::vector<std::shared_ptr<Shared>>{root, root->child, nullptr});
  }
  seed<10>("unordered", std::unordered_map<int, std::string>{{1, "one"}, {2, "two"}});
  {
    Tree tree;
    tree.tag = 1;
    tree.children.resize(2);
    tree.children[0].children.resize(1);
    seed<11>("tree", tree);
  }
  seed<12>("bitset", std::bitset<100>().set(3).set(99));
  seed<13>("fractions", std::vector<Fraction>{{1, 2}, {-3, 4}});
  seed<14>("chrono", std::make_tuple(std::chrono::milliseconds(1500), std::complex<float>(1, 2),
                                     std::array<bool, 3>{true, false, true}));
  seed<15>("point", Point{5, -5});
  seed<16>("bool", true);
  seed<17>("multimap", std::multimap<int, std::string>{{1, "a"}, {1, "b"}, {0, "c"}});
  seed<18>("grid", std::vector<std::vector<Point>>{{{1, 1}}, {}, {{2, 2}}});
  seed<19>("pair", std::make_pair(std::optional<Point>(Point{1, 1}),
                                  std::make_unique<std::string>("owned")));
  seed<20>("arrays",
           std::make_tuple(std::vector<std::array<bool, 2>>{{true, false}}, std::array<int, 0>{},
                           std::vector<std::complex<double>>{{1, -1}}));
}


// ------------------------------------------------------------------------------------------
// Helpers for the other targets: a seed is raw bytes.

using Bytes = std::vector<std::byte>;

void write_seed(const std::string& name, const Bytes& bytes) {
  const std::string path = out_dir + "/" + name + ".bin";
  std::ofstream file(path, std::ios::binary);
  file.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!file) {
    std::cerr << "make_corpus: cannot write " << path << "\n";
    std::exit(1);
  }
}

void put_u8(Bytes& out, std::uint64_t v) { out.push_back(static_cast<std::byte>(v)); }
void put_le(Bytes& out, std::uint64_t v, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) put_u8(out, v >> (8 * i));
}
void append(Bytes& out, std::span<const std::byte> bytes) { out.insert(out.end(), bytes.begin(), bytes.end()); }

int dev_null() {
  static const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  return fd;
}

void sample_function() {}

mproc::detail::FunctionId sample_id() {
  return mproc::detail::function_id_of(reinterpret_cast<const void*>(&sample_function));
}

// ------------------------------------------------------------------------------------------
// fuzz_frames: [descriptor count, bytes sent with them] + the stream send_frame writes.

/// The bytes send_frame puts on the wire for `bytes` with `fd_count` descriptors.
Bytes frame_stream(const Bytes& bytes, std::size_t fd_count) {
  int pair[2];
  ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair);
  std::vector<int> fds(fd_count, dev_null());
  mproc::detail::send_frame(pair[1], bytes, fds);
  ::close(pair[1]);
  Bytes stream;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(pair[0], buffer, sizeof buffer)) > 0)
    append(stream, std::as_bytes(std::span(buffer, static_cast<std::size_t>(n))));
  ::close(pair[0]);
  return stream;
}

void frame_seed(const std::string& name, const std::vector<std::pair<Bytes, std::size_t>>& frames) {
  std::size_t first_fds = frames.empty() ? 0 : frames[0].second;
  Bytes seed;
  put_u8(seed, first_fds);
  put_u8(seed, 16);  // the header travels with the descriptors, as send_frame does
  for (const auto& [bytes, fds] : frames) append(seed, frame_stream(bytes, fds));
  write_seed(name, seed);
}

void frames_corpus() {
  using namespace mproc::detail;
  BootRecord boot;
  boot.role = BootRole::process;
  boot.identity = ChildIdentity{"Process-1:2", "1:2", false, 1234, "MainProcess"};
  boot.target.entry = sample_id();
  boot.target.payload = mproc::serialize(std::pair<FunctionId, std::tuple<int, std::string>>(
      sample_id(), {42, "argument"}));
  boot.set_parent_death_signal = true;
  frame_seed("boot-process", {{mproc::serialize(boot), 0}});
  frame_seed("forkserver-request", {{mproc::serialize(boot), 3}});

  BootRecord server;
  server.role = BootRole::forkserver;
  server.identity.name = "mproc-forkserver";
  frame_seed("boot-forkserver", {{mproc::serialize(server), 0}});

  WorkerBoot worker;
  worker.ring_capacity = 1 << 16;
  worker.task_ring_offset = 4096;
  worker.result_ring_offset = 4096 + (1 << 16) + 640;
  worker.segment_bytes = 1 << 18;
  worker.max_tasks = 10;
  worker.has_initializer = true;
  worker.initializer.entry = sample_id();
  worker.initializer.payload = mproc::serialize(std::make_tuple(1, 2));
  BootRecord pool = boot;
  pool.target.payload = mproc::serialize(worker);
  frame_seed("boot-worker", {{mproc::serialize(pool), 3}});

  const std::int32_t pid = 4321, status = 9;
  const Bytes pid_bytes(reinterpret_cast<const std::byte*>(&pid), reinterpret_cast<const std::byte*>(&pid + 1));
  const Bytes status_bytes(reinterpret_cast<const std::byte*>(&status),
                           reinterpret_cast<const std::byte*>(&status + 1));
  frame_seed("forkserver-replies", {{pid_bytes, 1}, {status_bytes, 0}});
  frame_seed("empty-frames", {{{}, 0}, {{}, 0}});
  // A header whose announced body never comes: the peer died mid-frame.
  Bytes truncated = frame_stream(mproc::serialize(boot), 0);
  truncated.resize(24);
  Bytes seed{std::byte{0}, std::byte{0}};
  append(seed, truncated);
  write_seed("truncated-body", seed);
}

// ------------------------------------------------------------------------------------------
// fuzz_ring: [capacity] + a script (ops of fuzz_ring.cpp).

enum RingOp : std::uint8_t { ring_write, ring_read, ring_read_no_pop, ring_poke_header, ring_poke_data, ring_attach, ring_wait };

void ring_corpus() {
  // Header words: 0 magic, 1 version|header_bytes, 2 capacity, 16 head, 17 records_written,
  // 32 tail, 33 records_read, 48 consumer_wait, 64 producer_wait.
  auto write = [](Bytes& s, std::size_t n) { put_u8(s, ring_write); put_le(s, n, 2); };
  auto read = [](Bytes& s) { put_u8(s, ring_read); };
  auto poke_header = [](Bytes& s, std::size_t word, std::uint64_t v) { put_u8(s, ring_poke_header); put_u8(s, word); put_le(s, v, 8); };
  auto poke_data = [](Bytes& s, std::size_t offset, std::uint64_t v) { put_u8(s, ring_poke_data); put_le(s, offset, 2); put_le(s, v, 8); };
  {
    Bytes s{std::byte{0}};
    for (int i = 0; i < 4; ++i) { write(s, 16 * i + 5); read(s); }
    write(s, 100); put_u8(s, ring_wait); read(s); read(s);
    write_seed("write-read", s);
  }
  {
    Bytes s{std::byte{0}};  // records that wrap around the end (padding records)
    for (int i = 0; i < 12; ++i) { write(s, 1000); write(s, 700); read(s); read(s); }
    write_seed("wrap", s);
  }
  {
    Bytes s{std::byte{1}};
    write(s, 4000); put_u8(s, ring_read_no_pop); put_u8(s, ring_attach); read(s); write(s, 3000);
    write(s, 3000); read(s); read(s);
    write_seed("attach-large", s);
  }
  {
    Bytes s{std::byte{0}};
    write(s, 40); write(s, 40);
    poke_data(s, 8, 0x4154414400000400ULL);  // a data record claiming 1024 bytes
    read(s); read(s);
    write_seed("poke-length", s);
  }
  {
    Bytes s{std::byte{0}};
    write(s, 40); poke_header(s, 16, 0x1008); read(s);  // head far ahead
    poke_header(s, 32, 0x18); read(s); write(s, 8);       // tail moved
    poke_header(s, 2, 1 << 20); put_u8(s, ring_attach);   // capacity beyond the memory
    write_seed("poke-positions", s);
  }
  {
    Bytes s{std::byte{0}};  // a padding record that does not reach the end
    for (int i = 0; i < 3; ++i) { write(s, 1200); read(s); }
    write(s, 1200);
    poke_data(s, 3608, 0x4444415000000010ULL);
    read(s); read(s);
    write_seed("poke-padding", s);
  }
}

// ------------------------------------------------------------------------------------------
// fuzz_pool_records: [case, control] + payload.

void pool_seed(const std::string& name, int which, int control, const Bytes& payload) {
  Bytes seed;
  put_u8(seed, which);
  put_u8(seed, control);
  append(seed, payload);
  write_seed(name, seed);
}

template <class Args>
Bytes task_payload(const Args& args) {
  using namespace mproc::detail;
  Bytes out;
  append_task_callable(out, [] {});  // a lambda's callable part is empty
  append_part(out, args);
  return out;
}

// An apply task: each argument is its own part (append_argument), as Pool::apply_async writes it.
template <class... Args>
Bytes apply_payload(const Args&... args) {
  using namespace mproc::detail;
  Bytes out;
  append_task_callable(out, [] {});
  (append_argument<Args>(out, args), ...);
  return out;
}

Bytes remote(const char* type_id, const char* type_name, const char* what) {
  return mproc::serialize(mproc::detail::RemoteException{type_id, type_name, what, "#0 f() at f.cpp:1\n"});
}

void pool_records_corpus() {
  using namespace mproc::detail;
  {
    Bytes parts;
    append_part(parts, sample_id());
    append_part(parts, std::string("x"));
    append_part(parts, std::vector<int>{1, 2, 3});
    pool_seed("0-parts", 0, 0, parts);
  }
  {
    using namespace mproc::detail;
    // Ring records as the pool and the worker write them.
    TaskRecordHeader task{};
    task.task_id = 7;
    task.entry_offset = 0x1234;
    task.module_length = 3;
    task.kind = TaskRecordKind::task;
    task.payload_length = 4;
    Bytes record(sizeof task);
    std::memcpy(record.data(), &task, sizeof task);
    for (char c : std::string("lib")) record.push_back(static_cast<std::byte>(c));
    for (int i = 0; i < 4; ++i) record.push_back(std::byte{0x2a});
    pool_seed("14-task-record", 14, 0, record);
    task.kind = TaskRecordKind::task_overflow;
    task.payload_length = 1 << 20;
    record.resize(sizeof task + 3);
    std::memcpy(record.data(), &task, sizeof task);
    pool_seed("14-task-record-overflow", 14, 0, record);
    task.kind = TaskRecordKind::stop;
    record.resize(sizeof task);
    std::memcpy(record.data(), &task, sizeof task);
    pool_seed("14-task-record-stop", 14, 0, record);
    ResultRecordHeader result{7, static_cast<std::uint32_t>(ResultKind::value), 0, 4, 1500};
    record.assign(sizeof result, std::byte{0});
    std::memcpy(record.data(), &result, sizeof result);
    for (int i = 0; i < 4; ++i) record.push_back(std::byte{0x31});
    pool_seed("15-result-record", 15, 0, record);
    result.flags = result_in_overflow;
    result.payload_length = 1 << 24;
    record.resize(sizeof result);
    std::memcpy(record.data(), &result, sizeof result);
    pool_seed("15-result-record-overflow", 15, 0, record);
  }
  pool_seed("1-apply", 1, 0, apply_payload(7, std::string("seven")));
  pool_seed("2-apply-vector", 2, 0, apply_payload(std::vector<int>{1, 2, 3}));
  pool_seed("3-apply-void", 3, 0, apply_payload(std::string("void")));
  pool_seed("4-map", 4, 0, task_payload(std::vector<int>{1, 2, 3, 4}));
  pool_seed("5-starmap", 5, 0, task_payload(std::vector<std::tuple<int, int>>{{1, 2}, {3, 4}}));
  pool_seed("6-map-strings", 6, 0, task_payload(std::vector<std::string>{"a", "bc"}));
  // ItemResults: control = begin << 4 | count, bit 3 = not a plain value, bits 6-7 = kind - 2.
  const int value = 1 << 4 | 3, exception = value | 1 << 3, partial = exception | 1 << 6;
  pool_seed("7-items-value", 7, value, mproc::serialize(std::vector<long long>{1, 4, 9}));
  pool_seed("7-items-partial", 7, partial,
            mproc::serialize(ChunkOutcome<long long>{
                {1, 9}, {{1, RemoteException{typeid(std::runtime_error).name(), "std::runtime_error", "two", ""}}}}));
  pool_seed("7-items-exception", 7, exception,
            remote(typeid(std::invalid_argument).name(), "std::invalid_argument", "bad"));
  pool_seed("8-items-strings", 8, 2,
            mproc::serialize(std::vector<std::vector<std::string>>{{"a", "a"}, {"b", "b"}}));
  pool_seed("8-items-partial", 8, 2 | 1 << 3 | 1 << 6,
            mproc::serialize(ChunkOutcome<std::vector<std::string>>{
                {{"a"}}, {{1, RemoteException{"N2my5ErrorE", "my::Error", "custom", "trace"}}}}));
  pool_seed("9-future-value", 9, 1, mproc::serialize(std::string("result")));
  pool_seed("9-future-exception", 9, 2, remote(typeid(std::out_of_range).name(), "std::out_of_range", "range"));
  pool_seed("10-future-void", 10, 1, {});
  pool_seed("11-future-vector", 11, 1, mproc::serialize(std::vector<int>{1, 2}));
  pool_seed("12-remote-memory", 12, 0, remote(memory_limit_type_id, "mproc::MemoryLimitExceeded", "1048576"));
  pool_seed("12-remote-unknown", 12, 0, remote("N2my5ErrorE", "my::Error", "custom"));
  pool_seed("12-remote-bad-alloc", 12, 0, remote(typeid(std::bad_alloc).name(), "std::bad_alloc", ""));
  pool_seed("13-function-id", 13, 0, mproc::serialize(sample_id()));
}

// ------------------------------------------------------------------------------------------
// fuzz_connection: [mode] + records, each [u16 length | bit 15: a descriptor] + bytes.

constexpr std::uint32_t chunk_magic = 0x4e43504d;

Bytes chunk(std::uint64_t id, std::uint64_t total, std::uint64_t offset, std::string_view payload) {
  Bytes out;
  put_le(out, chunk_magic, 4);
  put_le(out, payload.size(), 4);
  put_le(out, id, 8);
  put_le(out, total, 8);
  put_le(out, offset, 8);
  append(out, std::as_bytes(std::span(payload.data(), payload.size())));
  return out;
}

void connection_seed(const std::string& name, int mode, const std::vector<std::pair<Bytes, bool>>& records) {
  Bytes seed;
  put_u8(seed, mode);
  for (const auto& [record, fd] : records) {
    put_le(seed, record.size() | (fd ? 0x8000 : 0), 2);
    append(seed, record);
  }
  write_seed(name, seed);
}

/// The records a real Connection sends for `messages` (each whole in one record).
std::vector<std::pair<Bytes, bool>> real_records(const std::vector<Bytes>& messages) {
  auto [sender, receiver] = mproc::Pipe(true);
  std::vector<std::pair<Bytes, bool>> records;
  for (const Bytes& message : messages) {
    sender.send_bytes(message);
    Bytes record(64 * 1024);
    const ssize_t n = ::recv(receiver.fileno(), record.data(), record.size(), 0);
    record.resize(static_cast<std::size_t>(n));
    records.emplace_back(std::move(record), false);
  }
  return records;
}

void connection_corpus() {
  connection_seed("real-bytes", 0, real_records({mproc::serialize(std::string("hello")), {}}));
  connection_seed("real-strings", 4,
                  real_records({mproc::serialize(std::vector<std::string>{"a", "b"})}));
  connection_seed("poll-max-length", 1 | 2 | 8 << 3, real_records({Bytes(4), Bytes(20)}));
  const std::uint64_t id = std::uint64_t{77} << 32;
  connection_seed("chunked", 0,
                  {{chunk(id, 12, 0, "abcd"), true}, {chunk(id, 12, 4, "efgh"), false},
                   {chunk(id, 12, 8, "ijkl"), false}});
  connection_seed("torn-then-whole", 1,
                  {{chunk(id, 12, 0, "abcd"), false}, {chunk(id + 1, 3, 0, "xyz"), false},
                   {chunk(id, 12, 4, "efgh"), false}});
  connection_seed("orphans", 0,
                  {{chunk(id, 8, 4, "efgh"), true}, {chunk(id + 2, 2, 0, "ok"), false}});
  connection_seed("torn-at-eof", 0, {{chunk(id, 100, 0, "abcd"), false}});
}

// ------------------------------------------------------------------------------------------
// fuzz_queue: [capacity, maxsize] + a script (ops of fuzz_queue.cpp).

enum QueueOp : std::uint8_t { queue_put, queue_get, queue_poke_header, queue_poke_ring, queue_attach, queue_task_done, queue_sizes };

void queue_corpus() {
  // Header words: 3 capacity, 4 maxsize, 10 current, 12-15 state 0 (head, tail, count,
  // unfinished), 16-19 state 1.
  auto put = [](Bytes& s, std::size_t n) { put_u8(s, queue_put); put_u8(s, n); };
  auto op = [](Bytes& s, QueueOp o) { put_u8(s, o); };
  auto poke_header = [](Bytes& s, std::size_t word, std::uint64_t v) { put_u8(s, queue_poke_header); put_u8(s, word); put_le(s, v, 8); };
  auto poke_ring = [](Bytes& s, std::size_t offset, std::uint64_t v) { put_u8(s, queue_poke_ring); put_u8(s, offset); put_le(s, v, 8); };
  {
    Bytes s{std::byte{6}, std::byte{0}};  // 64-byte ring: records wrap around its end
    for (int i = 0; i < 6; ++i) { put(s, 5 + 7 * i); put(s, 3); op(s, queue_get); op(s, queue_task_done); }
    op(s, queue_sizes); op(s, queue_get); op(s, queue_get);
    write_seed("put-get-wrap", s);
  }
  {
    Bytes s{std::byte{20}, std::byte{2}};  // maxsize 2
    put(s, 1); put(s, 2); put(s, 3); op(s, queue_attach); op(s, queue_get); op(s, queue_sizes);
    write_seed("maxsize-attach", s);
  }
  {
    Bytes s{std::byte{6}, std::byte{0}};
    put(s, 8); put(s, 8); poke_ring(s, 0, 4096); op(s, queue_get);   // a record longer than the ring
    poke_header(s, 13, 0x10000); op(s, queue_get);                      // tail beyond capacity
    poke_header(s, 10, 7); op(s, queue_sizes);                          // bad state index
    write_seed("poke", s);
  }
  {
    Bytes s{std::byte{6}, std::byte{0}};
    put(s, 8); poke_header(s, 3, 1 << 20); op(s, queue_attach);  // capacity beyond the segment
    poke_header(s, 14, 5); op(s, queue_get); op(s, queue_task_done); op(s, queue_task_done);
    write_seed("poke-count", s);
  }
}

// ------------------------------------------------------------------------------------------
// fuzz_segments: [kind, length (2), zero pages] + segment content + archive bytes.

template <class Handle>
void segment_seed(const std::string& name, int kind, const Handle& handle) {
  mproc::detail::FdSink sink;
  Bytes archive;
  {
    mproc::detail::ScopedFdSink use(sink);
    archive = mproc::serialize(handle);
  }
  const int fd = sink.fds().at(0);
  const off_t size = ::lseek(fd, 0, SEEK_END);
  Bytes content(static_cast<std::size_t>(size));
  if (::pread(fd, content.data(), content.size(), 0) != size) std::exit(1);
  // Trailing zeros become zero pages: seeds stay small.
  std::size_t used = content.size();
  while (used > 0 && content[used - 1] == std::byte{0}) --used;
  used = (used + 7) / 8 * 8;
  const std::size_t pages = (content.size() - std::min(used, content.size()) + 4095) / 4096;
  content.resize(used);
  Bytes seed;
  put_u8(seed, kind);
  put_le(seed, content.size(), 2);
  put_u8(seed, pages);
  append(seed, content);
  append(seed, archive);
  write_seed(name, seed);
}

void segments_corpus() {
  segment_seed("0-lock", 0, mproc::Lock());
  segment_seed("1-rlock", 1, mproc::RLock());
  segment_seed("2-semaphore", 2, mproc::Semaphore(3));
  segment_seed("3-bounded-semaphore", 3, mproc::BoundedSemaphore(2));
  {
    mproc::Event event;
    event.set();
    segment_seed("4-event", 4, event);
  }
  segment_seed("5-condition", 5, mproc::Condition());
  segment_seed("6-barrier", 6, mproc::Barrier(3));
  {
    mproc::Queue<int> queue(mproc::QueueOptions{.maxsize = 0, .capacity_bytes = 64});
    queue.put(7);
    segment_seed("7-queue", 7, queue);
  }
  {
    auto memory = mproc::SharedMemory::create(100);
    std::memset(memory.data(), 0x11, 100);
    segment_seed("8-shared-memory", 8, memory);
  }
  segment_seed("9-value", 9, mproc::Value<int>(42));
  segment_seed("10-array", 10, mproc::Array<double>{1.5, 2.5, 3.5});
  {
    // A ring with two records, laid out in a segment as the pool does.
    auto memory = mproc::SharedMemory::create(mproc::detail::SpscRing::required_bytes(4096));
    auto ring = mproc::detail::SpscRing::create(memory.bytes(), 4096);
    for (std::size_t n : {5, 40}) {
      std::byte* at = ring.try_begin_write(n);
      std::memset(at, 0x22, n);
      ring.commit_write(n);
    }
    segment_seed("11-ring", 11, memory);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: make_corpus <target name> <output directory>\n";
    return 2;
  }
  const std::string_view target = argv[1];
  out_dir = argv[2];
  if (target == "serialize") serialize_corpus();
  else if (target == "frames") frames_corpus();
  else if (target == "ring") ring_corpus();
  else if (target == "pool_records") pool_records_corpus();
  else if (target == "connection") connection_corpus();
  else if (target == "queue") queue_corpus();
  else if (target == "segments") segments_corpus();
  else {
    std::cerr << "make_corpus: no seeds for " << target << "\n";
    return 2;
  }
  return 0;
}
