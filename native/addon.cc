// Module entry point of the tine native addon (Linux only; see stub.cc elsewhere).
#include "common.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("supported", Napi::Boolean::New(env, true));
  tine::InitBtrfs(env, exports);
  tine::InitFs(env, exports);
  tine::InitProc(env, exports);
  tine::InitPin(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(tine_native, Init)
