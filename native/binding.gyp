{
  "targets": [
    {
      "target_name": "vop_native",
      "sources": [
        "binding/addon.c",
        "binding/errors.c",
        "binding/link_binding.c",
        "binding/device_binding.c",
        "binding/device_config.c",
        "binding/window_transport.c",
        "core/version.c",
        "core/region.c",
        "core/vq.c",
        "core/xport_shm.c",
        "core/xport_pci.c",
        "core/ivshmem_client.c",
        "core/window.c",
        "core/window_size.c",
        "core/link.c",
        "core/devreset.c",
        "core/private_atomic.c",
        "core/path_beneath.c",
        "devices/dev_common.c",
        "devices/dev_pipe.c",
        "devices/dev_blk.c",
        "devices/nbd.c",
        "devices/nbd_tls.c",
        "devices/dev_net.c",
        "devices/dev_console.c",
        "devices/dev_backend.c",
        "devices/net_netns.c",
        "devices/blk_parse.c",
        "devices/net_parse.c",
        "devices/nbd_parse.c"
      ],
      "include_dirs": ["include", "core"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden", "-pthread"],
      "cflags!": ["-fno-exceptions"],
      "ldflags": ["-pthread"],
      "libraries": ["-lssl", "-lcrypto"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
