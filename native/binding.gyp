{
  "targets": [
    {
      "target_name": "vop_native",
      "sources": [
        "binding/addon.c",
        "core/version.c"
      ],
      "include_dirs": ["include"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-fvisibility=hidden"],
      "cflags!": ["-fno-exceptions"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
