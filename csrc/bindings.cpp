// pybind11 bindings of the native backends. They translate arguments only:
// raw pointers (as integers), sizes, dtype codes and a CUDA stream handle, or a
// bound argument struct (LdpNoiseArgs) that Python fills field by field.
// Shapes, dtypes, devices and contiguity are validated in Python before the call.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "cpu/cpu_kernels.h"
#include "index/distance.h"
#include "index/hnsw.h"
#include "noiseforge/ldp_noise.h"
#if defined(NF_WITH_CUDA)
#include "cuda/cuda_kernels.h"
#endif

namespace py = pybind11;
using noiseforge::DType;
using noiseforge::LdpNoiseArgs;

namespace {

template <typename T>
T* ptr(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

#define NF_STR2(x) #x
#define NF_STR(x) NF_STR2(x)

py::dict build_info() {
  py::dict info;
#if defined(__clang__)
  info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  info["compiler"] = std::string("gcc ") + __VERSION__;
#else
  info["compiler"] = "unknown";
#endif
  info["cxx_standard"] = static_cast<long>(__cplusplus);
#if defined(_OPENMP)
  info["openmp"] = static_cast<long>(_OPENMP);
#else
  info["openmp"] = py::none();
#endif
  info["cpu_isa"] = noiseforge::cpu::active_isa();
  info["index_distances"] = std::string(noiseforge::hnsw::distance_isa()) +
                            (noiseforge::hnsw::has_u8s8_dot() ? "+vnni" : "");
#if defined(NF_WITH_CUDA)
  info["cuda"] = true;
  info["cuda_runtime"] = noiseforge::cuda::runtime_version();
  info["cuda_architectures"] = NF_STR(NF_CUDA_ARCHITECTURES);
#else
  info["cuda"] = false;
#endif
  return info;
}

// A pointer field of a kernel argument struct, read and written as an integer address.
template <typename Struct, typename Field>
void def_address(py::class_<Struct>& cls, const char* name, Field Struct::*member) {
  cls.def_property(
      name, [member](const Struct& a) { return reinterpret_cast<std::uintptr_t>(a.*member); },
      [member](Struct& a, std::uintptr_t p) { a.*member = reinterpret_cast<Field>(p); });
}

// An enum field of a kernel argument struct, read and written as its integer code.
template <typename Struct, typename Field>
void def_code(py::class_<Struct>& cls, const char* name, Field Struct::*member) {
  cls.def_property(
      name, [member](const Struct& a) { return static_cast<int>(a.*member); },
      [member](Struct& a, int v) { a.*member = static_cast<Field>(v); });
}

}  // namespace

// The noise kernels' arguments as one object, _C.LdpNoiseArgs, filled field by
// field in Python: pointers as integers, dtypes and the mechanism as their codes.
void bind_ldp_noise_args(py::module_& m) {
  py::class_<LdpNoiseArgs> cls(m, "LdpNoiseArgs",
                               "Arguments of the LDP noise kernels (see noiseforge/ldp_noise.h); "
                               "every field starts at 0.");
  cls.def(py::init([]() { return LdpNoiseArgs{}; }));
  def_address(cls, "x", &LdpNoiseArgs::x);
  def_address(cls, "out", &LdpNoiseArgs::out);
  cls.def_readwrite("n", &LdpNoiseArgs::n);
  cls.def_readwrite("d", &LdpNoiseArgs::d);
  cls.def_readwrite("copies", &LdpNoiseArgs::copies);
  def_code(cls, "in_dtype", &LdpNoiseArgs::in_dtype);
  def_code(cls, "out_dtype", &LdpNoiseArgs::out_dtype);
  def_address(cls, "lower", &LdpNoiseArgs::lower);
  def_address(cls, "upper", &LdpNoiseArgs::upper);
  def_address(cls, "scale", &LdpNoiseArgs::scale);
  def_address(cls, "table", &LdpNoiseArgs::table);
  cls.def_readwrite("table_len", &LdpNoiseArgs::table_len);
  cls.def_readwrite("table_bits", &LdpNoiseArgs::table_bits);
  def_code(cls, "mechanism", &LdpNoiseArgs::mechanism);
  cls.def_readwrite("clamp", &LdpNoiseArgs::clamp);
  cls.def_readwrite("seed", &LdpNoiseArgs::seed);
  cls.def_readwrite("offset", &LdpNoiseArgs::offset);
  def_address(cls, "row_keys", &LdpNoiseArgs::row_keys);
}

void bind_hnsw(py::module_& m) {
  using noiseforge::hnsw::Index;
  using noiseforge::hnsw::Metric;
  using noiseforge::hnsw::Quantization;
  py::class_<Index>(m, "HNSW")
      .def(py::init([](int dim, int metric, int mm, int efc, uint64_t seed, int quantization) {
             return std::make_unique<Index>(dim, static_cast<Metric>(metric), mm, efc, seed,
                                            static_cast<Quantization>(quantization));
           }),
           py::arg("dim"), py::arg("metric"), py::arg("M"), py::arg("ef_construction"),
           py::arg("seed"), py::arg("quantization"))
      .def(
          "add",
          [](Index& self, std::uintptr_t vectors, std::uintptr_t ids, int64_t n, int threads) {
            py::gil_scoped_release release;
            self.add(ptr<const float>(vectors), ptr<const int64_t>(ids), n, threads);
          },
          py::arg("vectors"), py::arg("ids"), py::arg("n"), py::arg("num_threads"))
      .def(
          "search",
          [](const Index& self, std::uintptr_t queries, int64_t nq, int k, int ef,
             std::uintptr_t offsets, std::uintptr_t excl, std::uintptr_t out_ids,
             std::uintptr_t out_scores, int threads) {
            py::gil_scoped_release release;
            self.search(ptr<const float>(queries), nq, k, ef, ptr<const int64_t>(offsets),
                        ptr<const int64_t>(excl), ptr<int64_t>(out_ids), ptr<float>(out_scores),
                        threads);
          },
          py::arg("queries"), py::arg("nq"), py::arg("k"), py::arg("ef"), py::arg("offsets"),
          py::arg("excluded"), py::arg("out_ids"), py::arg("out_scores"), py::arg("num_threads"))
      .def("serialize", [](const Index& self) { return py::bytes(self.serialize()); })
      .def_static("deserialize",
                  [](const py::bytes& b) { return Index::deserialize(std::string(b)); })
      .def_property_readonly("size", &Index::size)
      .def_property_readonly("dim", &Index::dim)
      .def_property_readonly("metric", [](const Index& self) { return static_cast<int>(self.metric()); })
      .def_property_readonly("M", &Index::m)
      .def_property_readonly("ef_construction", &Index::ef_construction)
      .def_property_readonly("seed", &Index::seed)
      .def_property_readonly("quantization",
                             [](const Index& self) { return static_cast<int>(self.quantization()); })
      .def_property_readonly("max_level", &Index::max_level)
      .def_property_readonly("memory_bytes", &Index::memory_bytes);
}

PYBIND11_MODULE(_C, m) {
  bind_hnsw(m);
  bind_ldp_noise_args(m);
  m.doc() = "noiseforge native backends (C++ with OpenMP, and CUDA when built with nvcc)";
  m.def("build_info", &build_info, "Facts about this build: compiler, OpenMP, CUDA, CPU ISA.");

  m.def(
      "ldp_noise_cpu",
      [](const LdpNoiseArgs& args, int num_threads) {
        py::gil_scoped_release release;
        noiseforge::cpu::ldp_noise(args, num_threads);
      },
      py::arg("args"), py::arg("num_threads"));

  m.def(
      "first_nonfinite_cpu",
      [](std::uintptr_t x, int64_t n, int dtype, int num_threads) {
        py::gil_scoped_release release;
        return noiseforge::cpu::first_nonfinite(ptr<const void>(x), n, static_cast<DType>(dtype),
                                                num_threads);
      },
      py::arg("x"), py::arg("n"), py::arg("dtype"), py::arg("num_threads"));

  m.def(
      "aggregate_cpu",
      [](std::uintptr_t index, int index_type, std::uintptr_t labels, int label_type,
         std::uintptr_t values, int64_t m, int64_t n, int64_t c, int mode, std::uintptr_t out,
         int count_type, int num_threads, std::uintptr_t top1_label, std::uintptr_t top1_top,
         std::uintptr_t top1_share, std::uintptr_t top1_margin) {
        const noiseforge::AggregateTop1 top1{ptr<int64_t>(top1_label), ptr<void>(top1_top),
                                             ptr<float>(top1_share), ptr<float>(top1_margin)};
        const noiseforge::AggregateArgs a{ptr<const void>(index),
                                          static_cast<noiseforge::IntType>(index_type),
                                          ptr<const void>(labels),
                                          static_cast<noiseforge::IntType>(label_type),
                                          ptr<const float>(values),
                                          m,
                                          n,
                                          c,
                                          static_cast<noiseforge::AggregateMode>(mode),
                                          ptr<void>(out),
                                          static_cast<noiseforge::IntType>(count_type),
                                          top1_label != 0 ? &top1 : nullptr};
        noiseforge::AggregateStatus st;
        {
          py::gil_scoped_release release;
          st = noiseforge::cpu::aggregate(a, num_threads);
        }
        return py::make_tuple(st.bad_index, st.bad_label, st.bad_value, st.sorted);
      },
      py::arg("index"), py::arg("index_type"), py::arg("labels"), py::arg("label_type"),
      py::arg("values"), py::arg("m"), py::arg("n"), py::arg("c"), py::arg("mode"),
      py::arg("out"), py::arg("count_type"), py::arg("num_threads"), py::arg("top1_label") = 0,
      py::arg("top1_top") = 0, py::arg("top1_share") = 0, py::arg("top1_margin") = 0);

  m.def(
      "knn_topk_cpu",
      [](std::uintptr_t q, int64_t nq, std::uintptr_t c, int64_t n, int64_t d, int k, int metric,
         std::uintptr_t offsets, std::uintptr_t excluded, std::uintptr_t out_ids,
         std::uintptr_t out_scores, int num_threads) {
        py::gil_scoped_release release;
        noiseforge::cpu::knn_topk(ptr<const float>(q), nq, ptr<const float>(c), n, d, k, metric,
                                  ptr<const int64_t>(offsets), ptr<const int64_t>(excluded),
                                  ptr<int64_t>(out_ids), ptr<float>(out_scores), num_threads);
      },
      py::arg("queries"), py::arg("nq"), py::arg("corpus"), py::arg("n"), py::arg("d"),
      py::arg("k"), py::arg("metric"), py::arg("offsets"), py::arg("excluded"),
      py::arg("out_ids"), py::arg("out_scores"), py::arg("num_threads"));

  m.def(
      "philox_words_cpu",
      [](std::uintptr_t out, int64_t count, uint64_t seed, uint64_t offset, int num_threads) {
        py::gil_scoped_release release;
        noiseforge::cpu::philox_words(ptr<uint32_t>(out), count, seed, offset, num_threads);
      },
      py::arg("out"), py::arg("count"), py::arg("seed"), py::arg("offset"),
      py::arg("num_threads"));

#if defined(NF_WITH_CUDA)
  m.def(
      "ldp_noise_cuda",
      [](const LdpNoiseArgs& args, std::uintptr_t stream) {
        py::gil_scoped_release release;
        noiseforge::cuda::ldp_noise(args, ptr<void>(stream));
      },
      py::arg("args"), py::arg("stream"));
  m.def(
      "philox_words_cuda",
      [](std::uintptr_t out, int64_t count, uint64_t seed, uint64_t offset,
         std::uintptr_t stream) {
        py::gil_scoped_release release;
        noiseforge::cuda::philox_words(ptr<uint32_t>(out), count, seed, offset,
                                       ptr<void>(stream));
      },
      py::arg("out"), py::arg("count"), py::arg("seed"), py::arg("offset"), py::arg("stream"));
  m.def(
      "scatter_add_cuda",
      [](std::uintptr_t index, bool index64, std::uintptr_t labels, bool labels64,
         std::uintptr_t values, std::uintptr_t acc, bool acc64, int64_t m, int64_t c,
         std::uintptr_t stream) {
        py::gil_scoped_release release;
        noiseforge::cuda::scatter_add(ptr<const void>(index), index64, ptr<const void>(labels),
                                      labels64, ptr<const int64_t>(values), ptr<void>(acc), acc64,
                                      m, c, ptr<void>(stream));
      },
      py::arg("index"), py::arg("index64"), py::arg("labels"), py::arg("labels64"),
      py::arg("values"), py::arg("acc"), py::arg("acc64"), py::arg("m"), py::arg("c"),
      py::arg("stream"));
  m.def(
      "scatter_rows_cuda",
      [](std::uintptr_t index, bool index64, std::uintptr_t values, std::uintptr_t acc, int64_t m,
         int64_t c, std::uintptr_t stream) {
        py::gil_scoped_release release;
        noiseforge::cuda::scatter_rows(ptr<const void>(index), index64,
                                       ptr<const int64_t>(values), ptr<int64_t>(acc), m, c,
                                       ptr<void>(stream));
      },
      py::arg("index"), py::arg("index64"), py::arg("values"), py::arg("acc"), py::arg("m"),
      py::arg("c"), py::arg("stream"));
  m.def("cuda_device_count", []() {
    const char* msg = "";
    const int n = noiseforge::cuda::device_count(&msg);
    return py::make_tuple(n, std::string(msg));
  });
#endif
}
