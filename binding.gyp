{
  "targets": [
    {
      # Compiles bpf/*.bpf.c with clang -target bpf and turns the object into a libbpf
      # skeleton header, so the addon embeds the BPF program and never reads a .o at run time.
      "target_name": "bpf_skeleton",
      "type": "none",
      "actions": [
        {
          "action_name": "thread_tracker_skel",
          "inputs": [
            "bpf/thread_tracker.bpf.c",
            "bpf/thread_tracker.h",
            "bpf/vmlinux_min.h",
            "scripts/build-bpf.sh"
          ],
          "outputs": ["<(SHARED_INTERMEDIATE_DIR)/bpf/thread_tracker.skel.h"],
          "action": ["bash", "scripts/build-bpf.sh", "bpf/thread_tracker.bpf.c", "<(SHARED_INTERMEDIATE_DIR)/bpf"]
        },
        {
          # The same program without task-local storage, for kernels before 6.2 (bpf_tracker.cc picks).
          "action_name": "thread_tracker_compat_skel",
          "inputs": [
            "bpf/thread_tracker.bpf.c",
            "bpf/thread_tracker.h",
            "bpf/vmlinux_min.h",
            "scripts/build-bpf.sh"
          ],
          "outputs": ["<(SHARED_INTERMEDIATE_DIR)/bpf/thread_tracker_compat.skel.h"],
          "action": ["bash", "scripts/build-bpf.sh", "bpf/thread_tracker.bpf.c", "<(SHARED_INTERMEDIATE_DIR)/bpf",
                     "thread_tracker_compat", "-DJT_TASK_STORAGE=0"]
        },
        {
          "action_name": "switch_baseline_skel",
          "inputs": ["bpf/switch_baseline.bpf.c", "bpf/vmlinux_min.h", "scripts/build-bpf.sh"],
          "outputs": ["<(SHARED_INTERMEDIATE_DIR)/bpf/switch_baseline.skel.h"],
          "action": ["bash", "scripts/build-bpf.sh", "bpf/switch_baseline.bpf.c", "<(SHARED_INTERMEDIATE_DIR)/bpf"]
        }
      ]
    },
    {
      "target_name": "jouletrace",
      "dependencies": ["bpf_skeleton"],
      "sources": [
        "native/addon.cc",
        "native/child_wait.cc",
        "native/sys_file.cc",
        "native/cpu_packages.cc",
        "native/energy/cpu_info.cc",
        "native/energy/msr_source.cc",
        "native/energy/powercap_source.cc",
        "native/energy/perf_source.cc",
        "native/energy/model_source.cc",
        "native/energy/source_factory.cc",
        "native/energy/source_binding.cc",
        "native/threads/bpf_tracker.cc",
        "native/threads/procfs_tracker.cc",
        "native/threads/target_process.cc",
        "native/threads/tracker_binding.cc",
        "native/sampler/attribution.cc",
        "native/sampler/sampler.cc",
        "native/sampler/sampler_binding.cc",
        "native/sampler/bench_binding.cc",
        "native/spans/route_table.cc",
        "native/spans/span_engine.cc",
        "native/spans/pool_threads.cc",
        "native/spans/span_binding.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native",
        "bpf",
        "<(SHARED_INTERMEDIATE_DIR)/bpf"
      ],
      # Without C++ exceptions node-addon-api aborts the process when a throw cannot happen
      # (an exception already pending, or a worker's environment shutting down mid-call); this
      # keeps the pending one instead.
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED",
                  "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags": ["-Wall", "-Wextra", "-O2", "-fvisibility=hidden"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-O2", "-fno-exceptions"],
      "cflags_cc!": ["-fno-rtti"],
      # JOULETRACE_STATIC_LIBBPF=1 (set by scripts/prebuild.sh) links libbpf, libelf and zlib
      # statically so a prebuilt addon runs on machines without them. Debian's libelf.a is not
      # position-independent, so prebuild.sh first builds a PIC one from Debian's elfutils
      # source package into JOULETRACE_STATIC_DIR, searched before the system directories.
      # libelf.a of elfutils 0.191 and later calls eu_tsearch and others from elfutils' own
      # libeu.a, linked where build-static-deps.sh left one: without it the shared object still
      # links, with those symbols undefined, and the process dies at libbpf's first elf_memory().
      "conditions": [
        ["\"<!(echo $JOULETRACE_STATIC_LIBBPF)\"==\"1\"", {
          "libraries": ["-L<!(echo ${JOULETRACE_STATIC_DIR:-/nonexistent})", "-Wl,-Bstatic", "-lbpf", "-lelf",
                        "<!@(test -f \"${JOULETRACE_STATIC_DIR:-/nonexistent}/libeu.a\" && echo -leu || true)",
                        "-lz", "-Wl,-Bdynamic", "-Wl,--exclude-libs,ALL"]
        }, {
          "libraries": ["-lbpf", "-lelf", "-lz"]
        }]
      ]
    }
  ]
}
