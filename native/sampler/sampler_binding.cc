#include <napi.h>
namespace jouletrace {
void InitSamplerBinding(Napi::Env, Napi::Object) {}
}
