{
  "targets": [
    {
      "target_name": "tine_native",
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_CPP_EXCEPTIONS", "NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra"],
      "conditions": [
        ["OS=='linux'", {
          "sources": [
            "native/addon.cc",
            "native/btrfs.cc",
            "native/common.cc",
            "native/fs.cc",
            "native/proc.cc",
            "native/pin.cc"
          ]
        }, {
          "sources": ["native/stub.cc"],
          "xcode_settings": {
            "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
            "CLANG_CXX_LANGUAGE_STANDARD": "c++17"
          },
          "msvs_settings": {
            "VCCLCompilerTool": { "ExceptionHandling": 1 }
          }
        }]
      ]
    },
    {
      "target_name": "tine-sandbox",
      "conditions": [
        ["OS=='linux'", {
          "type": "executable",
          "sources": ["native/sandbox/tine-sandbox.c"],
          "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra"]
        }, {
          "type": "none"
        }]
      ]
    },
    {
      "target_name": "tine-launch",
      "conditions": [
        ["OS=='linux'", {
          "type": "executable",
          "sources": ["native/launcher/tine-launch.c"],
          "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra"]
        }, {
          "type": "none"
        }]
      ]
    }
  ]
}
