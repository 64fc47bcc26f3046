// Built instead of the real addon on non-Linux platforms: the loader sees
// `supported: false` and reports that tine-host needs Linux with btrfs.
#include <napi.h>

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("supported", Napi::Boolean::New(env, false));
  return exports;
}

NODE_API_MODULE(tine_native, Init)
