/* cuda_emu_fp16.h: CUDA's cuda_fp16.h for the emulator: __half, __half2 and their functions.
 *
 * A kernel writes `#include <cuda_fp16.h>` as on a GPU; the emulator's build makes that name lead
 * here (minialex/emulator.py), and never shows this file to NVRTC. The names, constructors,
 * conversion operators and C++ operators are cuda_fp16.h's, so what compiles with NVRTC compiles
 * here and what is ambiguous there (h * 2.0f: __half * __half or float * float?) is ambiguous here.
 *
 * __half is 16 bits: a sign, 5 exponent bits (bias 15) and 10 fraction bits. Largest finite
 * value 65504, smallest normal 2^-14, smallest subnormal 2^-24. Rounding float or double to half
 * (__float2half, __float2half_rn, the constructors) is to nearest, ties to even, subnormals kept,
 * 65520 and above to infinity, NaN to the canonical NaN 0x7fff (as the GPU's cvt.rn.f16.f32).
 *
 * Arithmetic rounds once, as the GPU's fp16 units do: a + b, a - b and a * b of two halves are
 * exact in double (a product has 22 significant bits, a sum at most 41), so rounding that once to
 * half is the correctly rounded result; a / b is correctly rounded in double first, which is
 * innocuous because 53 >= 2 * 11 + 2 bits (the GPU's __hdiv goes through an approximate float
 * reciprocal and may differ in the last bit in rare cases); __hfma(a, b, c) rounds the exact
 * a * b + c once (double's fma, then half: a nearer tie cannot be made by the double step).
 * Comparisons are IEEE's (NaN unordered: __hne false, __hneu true); __hmax/__hmin return the
 * other operand for one NaN and order +0 above -0, as cuda_fp16.h's.
 */
#pragma once
#include <limits>

struct __half_raw { unsigned short x; };
struct __half2_raw { unsigned short x, y; };

namespace emu {

/* m >> s rounded to nearest, ties to even (0 < s < 64) */
static inline unsigned long long round_shift(unsigned long long m, int s) {
    unsigned long long q = m >> s, rest = m & ((1ull << s) - 1), half = 1ull << (s - 1);
    return q + (rest > half || (rest == half && (q & 1)) ? 1 : 0);
}

/* The half nearest to d (ties to even): its 16 bits */
static inline unsigned short half_bits(double d) {
    unsigned long long x;
    memcpy(&x, &d, sizeof x);
    unsigned short sign = (unsigned short)((x >> 48) & 0x8000u);
    unsigned long long ax = x & 0x7fffffffffffffffull;
    if (ax >= 0x7ff0000000000000ull) return ax == 0x7ff0000000000000ull ? (unsigned short)(sign | 0x7c00u) : 0x7fffu;
    int e = (int)(ax >> 52) - 1023;                             // d = 1.f * 2^e
    unsigned long long m = (ax & 0xfffffffffffffull) | (1ull << 52);   // 53 significant bits
    if (e >= 16) return (unsigned short)(sign | 0x7c00u);     // 65536 and above: infinity
    if (e >= -14)                                               // normal: keep 11 of 53 bits; a carry
        return (unsigned short)(sign | (((unsigned long long)(e + 14) << 10) + round_shift(m, 42)));  // moves up the exponent
    if (e < -25) return sign;                                   // below 2^-25: zero
    return (unsigned short)(sign | round_shift(m, 28 - e));    // subnormal: in units of 2^-24
}

/* The value of 16 half bits, exactly (every half is a float) */
static inline float half_value(unsigned short h) {
    unsigned int sign = (unsigned int)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, f = h & 0x3ffu, bits;
    if (e == 0) {                                               // zero or subnormal: f * 2^-24
        float v = (float)f * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    bits = sign | (e == 31 ? 0x7f800000u : (e - 15 + 127) << 23) | (f << 13);
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* A half toward zero as integer type T, saturated, NaN to 0 (cuda_fp16.h's __half2int_rz and kin) */
template <typename T> static inline T half_to_int(unsigned short h) {
    double v = half_value(h);
    if (v != v) return 0;
    double lo = (double)std::numeric_limits<T>::min(), hi = (double)std::numeric_limits<T>::max();
    return v <= lo ? std::numeric_limits<T>::min() : v >= hi ? std::numeric_limits<T>::max() : (T)v;
}

}  // namespace emu

struct __half {
protected:
    unsigned short __x;
public:
    __half() = default;
    __half(const __half_raw& r) : __x(r.x) {}
    __half& operator=(const __half_raw& r) { __x = r.x; return *this; }
    operator __half_raw() const { __half_raw r; r.x = __x; return r; }
    __half(float f) : __x(emu::half_bits(f)) {}
    __half(double d) : __x(emu::half_bits(d)) {}
    __half(short v) : __x(emu::half_bits(v)) {}
    __half(unsigned short v) : __x(emu::half_bits(v)) {}
    __half(int v) : __x(emu::half_bits(v)) {}
    __half(unsigned int v) : __x(emu::half_bits(v)) {}
    __half(long v) : __x(emu::half_bits((double)v)) {}
    __half(unsigned long v) : __x(emu::half_bits((double)v)) {}
    __half(long long v) : __x(emu::half_bits((double)v)) {}
    __half(unsigned long long v) : __x(emu::half_bits((double)v)) {}
    __half& operator=(float f) { __x = emu::half_bits(f); return *this; }
    __half& operator=(double d) { __x = emu::half_bits(d); return *this; }
    __half& operator=(short v) { __x = emu::half_bits(v); return *this; }
    __half& operator=(unsigned short v) { __x = emu::half_bits(v); return *this; }
    __half& operator=(int v) { __x = emu::half_bits(v); return *this; }
    __half& operator=(unsigned int v) { __x = emu::half_bits(v); return *this; }
    __half& operator=(long long v) { __x = emu::half_bits((double)v); return *this; }
    __half& operator=(unsigned long long v) { __x = emu::half_bits((double)v); return *this; }
    operator float() const { return emu::half_value(__x); }
    operator signed char() const { return emu::half_to_int<signed char>(__x); }
    operator unsigned char() const { return emu::half_to_int<unsigned char>(__x); }
    operator char() const { return emu::half_to_int<char>(__x); }
    operator short() const { return emu::half_to_int<short>(__x); }
    operator unsigned short() const { return emu::half_to_int<unsigned short>(__x); }
    operator int() const { return emu::half_to_int<int>(__x); }
    operator unsigned int() const { return emu::half_to_int<unsigned int>(__x); }
    operator long() const { return emu::half_to_int<long>(__x); }
    operator unsigned long() const { return emu::half_to_int<unsigned long>(__x); }
    operator long long() const { return emu::half_to_int<long long>(__x); }
    operator unsigned long long() const { return emu::half_to_int<unsigned long long>(__x); }
    operator bool() const { return (__x & 0x7fffu) != 0; }
};

struct __attribute__((aligned(4))) __half2 {     // 4-byte aligned, as CUDA's (one 32-bit register)
    __half x, y;
    __half2() = default;
    __half2(const __half& a, const __half& b) : x(a), y(b) {}
    __half2(const __half2_raw& r) { __half_raw h; h.x = r.x; x = h; h.x = r.y; y = h; }
    __half2& operator=(const __half2_raw& r) { *this = __half2(r); return *this; }
    operator __half2_raw() const { __half2_raw r; r.x = __half_raw(x).x; r.y = __half_raw(y).x; return r; }
};

typedef __half half;
typedef __half2 half2;

namespace emu {
static inline __half half_of_bits(unsigned short b) { __half_raw r; r.x = b; return __half(r); }
static inline unsigned short bits_of_half(const __half h) { return __half_raw(h).x; }
static inline __half half_of(double v) { return half_of_bits(half_bits(v)); }
static inline double double_of(const __half h) { return (double)half_value(bits_of_half(h)); }
}  // namespace emu

/* ----- conversions and bits ----- */
static inline __half __float2half(const float f) { return emu::half_of_bits(emu::half_bits(f)); }
static inline __half __float2half_rn(const float f) { return __float2half(f); }
static inline __half __double2half(const double d) { return emu::half_of_bits(emu::half_bits(d)); }
static inline float __half2float(const __half h) { return emu::half_value(emu::bits_of_half(h)); }
static inline __half __int2half_rn(const int i) { return __half(i); }
static inline __half __uint2half_rn(const unsigned int i) { return __half(i); }
static inline __half __short2half_rn(const short i) { return __half(i); }
static inline __half __ushort2half_rn(const unsigned short i) { return __half(i); }
static inline __half __ll2half_rn(const long long i) { return __half(i); }
static inline __half __ull2half_rn(const unsigned long long i) { return __half(i); }
static inline int __half2int_rz(const __half h) { return emu::half_to_int<int>(emu::bits_of_half(h)); }
static inline unsigned int __half2uint_rz(const __half h) { return emu::half_to_int<unsigned int>(emu::bits_of_half(h)); }
static inline short __half2short_rz(const __half h) { return emu::half_to_int<short>(emu::bits_of_half(h)); }
static inline unsigned short __half2ushort_rz(const __half h) { return emu::half_to_int<unsigned short>(emu::bits_of_half(h)); }
static inline long long __half2ll_rz(const __half h) { return emu::half_to_int<long long>(emu::bits_of_half(h)); }
static inline unsigned long long __half2ull_rz(const __half h) { return emu::half_to_int<unsigned long long>(emu::bits_of_half(h)); }
static inline unsigned short __half_as_ushort(const __half h) { return emu::bits_of_half(h); }
static inline short __half_as_short(const __half h) { return (short)emu::bits_of_half(h); }
static inline __half __ushort_as_half(const unsigned short i) { return emu::half_of_bits(i); }
static inline __half __short_as_half(const short i) { return emu::half_of_bits((unsigned short)i); }

/* ----- __half2: two halves, low (x) and high (y) ----- */
static inline __half2 make_half2(const __half x, const __half y) { return __half2(x, y); }
static inline __half2 __halves2half2(const __half a, const __half b) { return __half2(a, b); }
static inline __half2 __half2half2(const __half a) { return __half2(a, a); }
static inline __half2 __float2half2_rn(const float a) { return __half2half2(__float2half(a)); }
static inline __half2 __floats2half2_rn(const float a, const float b) { return __half2(__float2half(a), __float2half(b)); }
static inline __half2 __float22half2_rn(const float2 a) { return __floats2half2_rn(a.x, a.y); }
static inline float2 __half22float2(const __half2 a) { return make_float2(__half2float(a.x), __half2float(a.y)); }
static inline float __low2float(const __half2 a) { return __half2float(a.x); }
static inline float __high2float(const __half2 a) { return __half2float(a.y); }
static inline __half __low2half(const __half2 a) { return a.x; }
static inline __half __high2half(const __half2 a) { return a.y; }
static inline __half2 __low2half2(const __half2 a) { return __half2(a.x, a.x); }
static inline __half2 __high2half2(const __half2 a) { return __half2(a.y, a.y); }
static inline __half2 __lowhigh2highlow(const __half2 a) { return __half2(a.y, a.x); }
static inline __half2 __lows2half2(const __half2 a, const __half2 b) { return __half2(a.x, b.x); }
static inline __half2 __highs2half2(const __half2 a, const __half2 b) { return __half2(a.y, b.y); }

/* ----- arithmetic: exact (or correctly rounded) in double, then rounded once to half ----- */
static inline __half __hadd(const __half a, const __half b) { return emu::half_of(emu::double_of(a) + emu::double_of(b)); }
static inline __half __hsub(const __half a, const __half b) { return emu::half_of(emu::double_of(a) - emu::double_of(b)); }
static inline __half __hmul(const __half a, const __half b) { return emu::half_of(emu::double_of(a) * emu::double_of(b)); }
static inline __half __hdiv(const __half a, const __half b) { return emu::half_of(emu::double_of(a) / emu::double_of(b)); }
static inline __half __hfma(const __half a, const __half b, const __half c) {
    return emu::half_of(fma(emu::double_of(a), emu::double_of(b), emu::double_of(c)));
}
static inline __half __hadd_rn(const __half a, const __half b) { return __hadd(a, b); }
static inline __half __hsub_rn(const __half a, const __half b) { return __hsub(a, b); }
static inline __half __hmul_rn(const __half a, const __half b) { return __hmul(a, b); }
static inline __half __hneg(const __half a) { return emu::half_of_bits(emu::bits_of_half(a) ^ 0x8000u); }
static inline __half __habs(const __half a) { return emu::half_of_bits(emu::bits_of_half(a) & 0x7fffu); }

/* ----- comparisons (ordered: false when either is NaN; the u versions: true then) ----- */
static inline bool __hisnan(const __half a) { return (emu::bits_of_half(a) & 0x7fffu) > 0x7c00u; }
static inline int __hisinf(const __half a) {
    return emu::bits_of_half(a) == 0x7c00u ? 1 : emu::bits_of_half(a) == 0xfc00u ? -1 : 0;
}
#define EMU_HALF_COMPARE(name, op) \
    static inline bool name(const __half a, const __half b) { return __half2float(a) op __half2float(b); } \
    static inline bool name##u(const __half a, const __half b) { \
        return __hisnan(a) || __hisnan(b) || __half2float(a) op __half2float(b); }
EMU_HALF_COMPARE(__heq, ==)
EMU_HALF_COMPARE(__hle, <=)
EMU_HALF_COMPARE(__hge, >=)
EMU_HALF_COMPARE(__hlt, <)
EMU_HALF_COMPARE(__hgt, >)
#undef EMU_HALF_COMPARE
static inline bool __hne(const __half a, const __half b) { return !__hisnan(a) && !__hisnan(b) && !__heq(a, b); }
static inline bool __hneu(const __half a, const __half b) { return !__heq(a, b); }

/* max/min: a NaN loses to a number; two NaNs give the canonical NaN; +0 counts above -0 */
static inline __half __hmax(const __half a, const __half b) {
    if (__hisnan(a) && __hisnan(b)) return emu::half_of_bits(0x7fffu);
    if (__hisnan(a)) return b;
    if (__hisnan(b)) return a;
    if (__heq(a, b)) return emu::bits_of_half(a) > emu::bits_of_half(b) ? b : a;     // -0 has the larger bits
    return __hgt(a, b) ? a : b;
}
static inline __half __hmin(const __half a, const __half b) {
    if (__hisnan(a) && __hisnan(b)) return emu::half_of_bits(0x7fffu);
    if (__hisnan(a)) return b;
    if (__hisnan(b)) return a;
    if (__heq(a, b)) return emu::bits_of_half(a) > emu::bits_of_half(b) ? a : b;
    return __hlt(a, b) ? a : b;
}
static inline __half __hmax_nan(const __half a, const __half b) {
    return __hisnan(a) || __hisnan(b) ? emu::half_of_bits(0x7fffu) : __hmax(a, b);
}
static inline __half __hmin_nan(const __half a, const __half b) {
    return __hisnan(a) || __hisnan(b) ? emu::half_of_bits(0x7fffu) : __hmin(a, b);
}

/* ----- the __half2 versions: each half on its own ----- */
#define EMU_HALF2_OP(name, op) \
    static inline __half2 name(const __half2 a, const __half2 b) { return __half2(op(a.x, b.x), op(a.y, b.y)); }
EMU_HALF2_OP(__hadd2, __hadd)
EMU_HALF2_OP(__hsub2, __hsub)
EMU_HALF2_OP(__hmul2, __hmul)
EMU_HALF2_OP(__h2div, __hdiv)
EMU_HALF2_OP(__hmax2, __hmax)
EMU_HALF2_OP(__hmin2, __hmin)
EMU_HALF2_OP(__hmax2_nan, __hmax_nan)
EMU_HALF2_OP(__hmin2_nan, __hmin_nan)
#undef EMU_HALF2_OP
static inline __half2 __hfma2(const __half2 a, const __half2 b, const __half2 c) {
    return __half2(__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y));
}
static inline __half2 __hneg2(const __half2 a) { return __half2(__hneg(a.x), __hneg(a.y)); }
static inline __half2 __habs2(const __half2 a) { return __half2(__habs(a.x), __habs(a.y)); }
static inline __half2 __hisnan2(const __half2 a) { return __half2(__half(__hisnan(a.x) ? 1.0f : 0.0f), __half(__hisnan(a.y) ? 1.0f : 0.0f)); }
/* comparisons of __half2: __heq2 gives 1.0 or 0.0 per half, __hbeq2 whether both halves hold */
#define EMU_HALF2_COMPARE(name, both, op) \
    static inline __half2 name(const __half2 a, const __half2 b) { \
        return __half2(__half(op(a.x, b.x) ? 1.0f : 0.0f), __half(op(a.y, b.y) ? 1.0f : 0.0f)); } \
    static inline bool both(const __half2 a, const __half2 b) { return op(a.x, b.x) && op(a.y, b.y); }
EMU_HALF2_COMPARE(__heq2, __hbeq2, __heq)
EMU_HALF2_COMPARE(__hne2, __hbne2, __hne)
EMU_HALF2_COMPARE(__hle2, __hble2, __hle)
EMU_HALF2_COMPARE(__hge2, __hbge2, __hge)
EMU_HALF2_COMPARE(__hlt2, __hblt2, __hlt)
EMU_HALF2_COMPARE(__hgt2, __hbgt2, __hgt)
EMU_HALF2_COMPARE(__hequ2, __hbequ2, __hequ)
EMU_HALF2_COMPARE(__hneu2, __hbneu2, __hneu)
EMU_HALF2_COMPARE(__hleu2, __hbleu2, __hleu)
EMU_HALF2_COMPARE(__hgeu2, __hbgeu2, __hgeu)
EMU_HALF2_COMPARE(__hltu2, __hbltu2, __hltu)
EMU_HALF2_COMPARE(__hgtu2, __hbgtu2, __hgtu)
#undef EMU_HALF2_COMPARE

/* ----- the C++ operators of cuda_fp16.h ----- */
static inline __half operator+(const __half& a, const __half& b) { return __hadd(a, b); }
static inline __half operator-(const __half& a, const __half& b) { return __hsub(a, b); }
static inline __half operator*(const __half& a, const __half& b) { return __hmul(a, b); }
static inline __half operator/(const __half& a, const __half& b) { return __hdiv(a, b); }
static inline __half& operator+=(__half& a, const __half& b) { a = __hadd(a, b); return a; }
static inline __half& operator-=(__half& a, const __half& b) { a = __hsub(a, b); return a; }
static inline __half& operator*=(__half& a, const __half& b) { a = __hmul(a, b); return a; }
static inline __half& operator/=(__half& a, const __half& b) { a = __hdiv(a, b); return a; }
static inline __half& operator++(__half& h) { h += emu::half_of_bits(0x3c00u); return h; }
static inline __half& operator--(__half& h) { h -= emu::half_of_bits(0x3c00u); return h; }
static inline __half operator++(__half& h, int) { __half before = h; ++h; return before; }
static inline __half operator--(__half& h, int) { __half before = h; --h; return before; }
static inline __half operator+(const __half& h) { return h; }
static inline __half operator-(const __half& h) { return __hneg(h); }
static inline bool operator==(const __half& a, const __half& b) { return __heq(a, b); }
static inline bool operator!=(const __half& a, const __half& b) { return __hneu(a, b); }
static inline bool operator>(const __half& a, const __half& b) { return __hgt(a, b); }
static inline bool operator<(const __half& a, const __half& b) { return __hlt(a, b); }
static inline bool operator>=(const __half& a, const __half& b) { return __hge(a, b); }
static inline bool operator<=(const __half& a, const __half& b) { return __hle(a, b); }
static inline __half2 operator+(const __half2& a, const __half2& b) { return __hadd2(a, b); }
static inline __half2 operator-(const __half2& a, const __half2& b) { return __hsub2(a, b); }
static inline __half2 operator*(const __half2& a, const __half2& b) { return __hmul2(a, b); }
static inline __half2 operator/(const __half2& a, const __half2& b) { return __h2div(a, b); }
static inline __half2& operator+=(__half2& a, const __half2& b) { a = __hadd2(a, b); return a; }
static inline __half2& operator-=(__half2& a, const __half2& b) { a = __hsub2(a, b); return a; }
static inline __half2& operator*=(__half2& a, const __half2& b) { a = __hmul2(a, b); return a; }
static inline __half2& operator/=(__half2& a, const __half2& b) { a = __h2div(a, b); return a; }
static inline __half2 operator+(const __half2& h) { return h; }
static inline __half2 operator-(const __half2& h) { return __hneg2(h); }
static inline bool operator==(const __half2& a, const __half2& b) { return __hbeq2(a, b); }
static inline bool operator!=(const __half2& a, const __half2& b) { return __hbneu2(a, b); }
static inline bool operator>(const __half2& a, const __half2& b) { return __hbgt2(a, b); }
static inline bool operator<(const __half2& a, const __half2& b) { return __hblt2(a, b); }
static inline bool operator>=(const __half2& a, const __half2& b) { return __hbge2(a, b); }
static inline bool operator<=(const __half2& a, const __half2& b) { return __hble2(a, b); }

/* atomicAdd on a half (sm_70 and later on a GPU); threads run one at a time here */
static inline __half atomicAdd(__half* address, __half value) { __half old = *address; *address = old + value; return old; }
#ifdef EMU_DEBUG
static inline __half atomicAdd(emu::ptr<__half> p, __half value) { return atomicAdd(&*p, value); }
#endif
