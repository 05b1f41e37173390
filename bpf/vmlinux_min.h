/* placeholder: replaced by the real minimal CO-RE type set */
#pragma once
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef int __s32;
typedef long long __s64;
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef __u32 u32;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef __u64 u64;
typedef _Bool bool;
enum { BPF_ANY = 0 };
enum bpf_map_type { BPF_MAP_TYPE_ARRAY = 2 };
