#include <napi.h>
namespace jouletrace {
void InitSourceBinding(Napi::Env, Napi::Object) {}
}
