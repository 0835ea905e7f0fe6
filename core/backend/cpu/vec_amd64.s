//go:build amd64 && !purego

#include "textflag.h"

// Vector helpers for softmax (AVX2 + FMA), written for this package.

// expConsts holds the constants of the exp kernel, each repeated 8 times
// (32 bytes) so that instructions can take them as memory operands.
// lo: -87: e^x stays a normal float
DATA expConsts<>+0(SB)/8, $0xc2ae0000c2ae0000
DATA expConsts<>+8(SB)/8, $0xc2ae0000c2ae0000
DATA expConsts<>+16(SB)/8, $0xc2ae0000c2ae0000
DATA expConsts<>+24(SB)/8, $0xc2ae0000c2ae0000
// hi: 88.7228: e^x ≤ the largest float
DATA expConsts<>+32(SB)/8, $0x42b1721742b17217
DATA expConsts<>+40(SB)/8, $0x42b1721742b17217
DATA expConsts<>+48(SB)/8, $0x42b1721742b17217
DATA expConsts<>+56(SB)/8, $0x42b1721742b17217
// log2e: log2(e)
DATA expConsts<>+64(SB)/8, $0x3fb8aa3b3fb8aa3b
DATA expConsts<>+72(SB)/8, $0x3fb8aa3b3fb8aa3b
DATA expConsts<>+80(SB)/8, $0x3fb8aa3b3fb8aa3b
DATA expConsts<>+88(SB)/8, $0x3fb8aa3b3fb8aa3b
// ln2hi: 0.693359375 (ln 2 to 9 bits: n·ln2hi is exact)
DATA expConsts<>+96(SB)/8, $0x3f3180003f318000
DATA expConsts<>+104(SB)/8, $0x3f3180003f318000
DATA expConsts<>+112(SB)/8, $0x3f3180003f318000
DATA expConsts<>+120(SB)/8, $0x3f3180003f318000
// ln2lo: ln 2 − ln2hi
DATA expConsts<>+128(SB)/8, $0xb95e8083b95e8083
DATA expConsts<>+136(SB)/8, $0xb95e8083b95e8083
DATA expConsts<>+144(SB)/8, $0xb95e8083b95e8083
DATA expConsts<>+152(SB)/8, $0xb95e8083b95e8083
// c7: 1/5040
DATA expConsts<>+160(SB)/8, $0x39500d0139500d01
DATA expConsts<>+168(SB)/8, $0x39500d0139500d01
DATA expConsts<>+176(SB)/8, $0x39500d0139500d01
DATA expConsts<>+184(SB)/8, $0x39500d0139500d01
// c6: 1/720
DATA expConsts<>+192(SB)/8, $0x3ab60b613ab60b61
DATA expConsts<>+200(SB)/8, $0x3ab60b613ab60b61
DATA expConsts<>+208(SB)/8, $0x3ab60b613ab60b61
DATA expConsts<>+216(SB)/8, $0x3ab60b613ab60b61
// c5: 1/120
DATA expConsts<>+224(SB)/8, $0x3c0888893c088889
DATA expConsts<>+232(SB)/8, $0x3c0888893c088889
DATA expConsts<>+240(SB)/8, $0x3c0888893c088889
DATA expConsts<>+248(SB)/8, $0x3c0888893c088889
// c4: 1/24
DATA expConsts<>+256(SB)/8, $0x3d2aaaab3d2aaaab
DATA expConsts<>+264(SB)/8, $0x3d2aaaab3d2aaaab
DATA expConsts<>+272(SB)/8, $0x3d2aaaab3d2aaaab
DATA expConsts<>+280(SB)/8, $0x3d2aaaab3d2aaaab
// c3: 1/6
DATA expConsts<>+288(SB)/8, $0x3e2aaaab3e2aaaab
DATA expConsts<>+296(SB)/8, $0x3e2aaaab3e2aaaab
DATA expConsts<>+304(SB)/8, $0x3e2aaaab3e2aaaab
DATA expConsts<>+312(SB)/8, $0x3e2aaaab3e2aaaab
// c2: 1/2
DATA expConsts<>+320(SB)/8, $0x3f0000003f000000
DATA expConsts<>+328(SB)/8, $0x3f0000003f000000
DATA expConsts<>+336(SB)/8, $0x3f0000003f000000
DATA expConsts<>+344(SB)/8, $0x3f0000003f000000
// one: 1
DATA expConsts<>+352(SB)/8, $0x3f8000003f800000
DATA expConsts<>+360(SB)/8, $0x3f8000003f800000
DATA expConsts<>+368(SB)/8, $0x3f8000003f800000
DATA expConsts<>+376(SB)/8, $0x3f8000003f800000
// bias: exponent bias (int32)
DATA expConsts<>+384(SB)/8, $0x7f0000007f
DATA expConsts<>+392(SB)/8, $0x7f0000007f
DATA expConsts<>+400(SB)/8, $0x7f0000007f
DATA expConsts<>+408(SB)/8, $0x7f0000007f
// absmask: clears the sign bit
DATA expConsts<>+416(SB)/8, $0x7fffffff7fffffff
DATA expConsts<>+424(SB)/8, $0x7fffffff7fffffff
DATA expConsts<>+432(SB)/8, $0x7fffffff7fffffff
DATA expConsts<>+440(SB)/8, $0x7fffffff7fffffff
// signmask: the sign bit
DATA expConsts<>+448(SB)/8, $0x8000000080000000
DATA expConsts<>+456(SB)/8, $0x8000000080000000
DATA expConsts<>+464(SB)/8, $0x8000000080000000
DATA expConsts<>+472(SB)/8, $0x8000000080000000
// half: 1/2
DATA expConsts<>+480(SB)/8, $0x3f0000003f000000
DATA expConsts<>+488(SB)/8, $0x3f0000003f000000
DATA expConsts<>+496(SB)/8, $0x3f0000003f000000
DATA expConsts<>+504(SB)/8, $0x3f0000003f000000
// rsqrt2: 1/√2
DATA expConsts<>+512(SB)/8, $0x3f3504f33f3504f3
DATA expConsts<>+520(SB)/8, $0x3f3504f33f3504f3
DATA expConsts<>+528(SB)/8, $0x3f3504f33f3504f3
DATA expConsts<>+536(SB)/8, $0x3f3504f33f3504f3
// asp: A&S p = 0.3275911
DATA expConsts<>+544(SB)/8, $0x3ea7ba053ea7ba05
DATA expConsts<>+552(SB)/8, $0x3ea7ba053ea7ba05
DATA expConsts<>+560(SB)/8, $0x3ea7ba053ea7ba05
DATA expConsts<>+568(SB)/8, $0x3ea7ba053ea7ba05
// a1: A&S a1 = 0.254829592
DATA expConsts<>+576(SB)/8, $0x3e8279063e827906
DATA expConsts<>+584(SB)/8, $0x3e8279063e827906
DATA expConsts<>+592(SB)/8, $0x3e8279063e827906
DATA expConsts<>+600(SB)/8, $0x3e8279063e827906
// a2: A&S a2 = −0.284496736
DATA expConsts<>+608(SB)/8, $0xbe91a98ebe91a98e
DATA expConsts<>+616(SB)/8, $0xbe91a98ebe91a98e
DATA expConsts<>+624(SB)/8, $0xbe91a98ebe91a98e
DATA expConsts<>+632(SB)/8, $0xbe91a98ebe91a98e
// a3: A&S a3 = 1.421413741
DATA expConsts<>+640(SB)/8, $0x3fb5f0e33fb5f0e3
DATA expConsts<>+648(SB)/8, $0x3fb5f0e33fb5f0e3
DATA expConsts<>+656(SB)/8, $0x3fb5f0e33fb5f0e3
DATA expConsts<>+664(SB)/8, $0x3fb5f0e33fb5f0e3
// a4: A&S a4 = −1.453152027
DATA expConsts<>+672(SB)/8, $0xbfba00e3bfba00e3
DATA expConsts<>+680(SB)/8, $0xbfba00e3bfba00e3
DATA expConsts<>+688(SB)/8, $0xbfba00e3bfba00e3
DATA expConsts<>+696(SB)/8, $0xbfba00e3bfba00e3
// a5: A&S a5 = 1.061405429
DATA expConsts<>+704(SB)/8, $0x3f87dc223f87dc22
DATA expConsts<>+712(SB)/8, $0x3f87dc223f87dc22
DATA expConsts<>+720(SB)/8, $0x3f87dc223f87dc22
DATA expConsts<>+728(SB)/8, $0x3f87dc223f87dc22
GLOBL expConsts<>(SB), RODATA|NOPTR, $736

// func expScaleAVX2(x *float32, n int, scale, shift float32) float32
// For n a multiple of 8: x[i] = exp(x[i]*scale - shift) in place, where the
// argument is clamped to [-87, 88.72]; returns the sum of the results.
TEXT ·expScaleAVX2(SB), NOSPLIT, $0-28
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS scale+16(FP), Y15
	VBROADCASTSS shift+20(FP), Y14
	VXORPS Y8, Y8, Y8 // running sum
	SHRQ $3, CX
	JZ   expdone

exploop:
	VMOVUPS (SI), Y0
	VFMSUB213PS Y14, Y15, Y0 // y = x·scale − shift
	VMAXPS expConsts<>+0(SB), Y0, Y0
	VMINPS expConsts<>+32(SB), Y0, Y0
	VMULPS expConsts<>+64(SB), Y0, Y1
	VROUNDPS $0, Y1, Y1 // n = round(y·log2e)
	VFNMADD231PS expConsts<>+96(SB), Y1, Y0 // r = y − n·ln2hi
	VFNMADD231PS expConsts<>+128(SB), Y1, Y0 // r −= n·ln2lo
	// p = e^r by its Taylor series to degree 7, in Horner form.
	VMOVUPS expConsts<>+160(SB), Y2
	VFMADD213PS expConsts<>+192(SB), Y0, Y2
	VFMADD213PS expConsts<>+224(SB), Y0, Y2
	VFMADD213PS expConsts<>+256(SB), Y0, Y2
	VFMADD213PS expConsts<>+288(SB), Y0, Y2
	VFMADD213PS expConsts<>+320(SB), Y0, Y2
	VFMADD213PS expConsts<>+352(SB), Y0, Y2
	VFMADD213PS expConsts<>+352(SB), Y0, Y2
	// 2^n from the exponent bits: (n + 127) << 23.
	VCVTPS2DQ Y1, Y1
	VPADDD expConsts<>+384(SB), Y1, Y1
	VPSLLD $23, Y1, Y1
	VMULPS Y1, Y2, Y2
	VMOVUPS Y2, (SI)
	VADDPS Y2, Y8, Y8
	ADDQ $32, SI
	DECQ CX
	JNZ  exploop

expdone:
	VEXTRACTF128 $1, Y8, X0
	VADDPS X8, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VMOVSS X0, ret+24(FP)
	VZEROUPPER
	RET

// func maxAVX2(x *float32, n int) float32
// Returns the largest of x[0:n], n a positive multiple of 8.
TEXT ·maxAVX2(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VMOVUPS (SI), Y0
	ADDQ $32, SI
	SHRQ $3, CX
	DECQ CX
	JZ   maxdone

maxloop:
	VMAXPS (SI), Y0, Y0
	ADDQ $32, SI
	DECQ CX
	JNZ  maxloop

maxdone:
	VEXTRACTF128 $1, Y0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0x4E, X0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0xB1, X0, X1
	VMAXPS X1, X0, X0
	VMOVSS X0, ret+16(FP)
	VZEROUPPER
	RET

// func sigmulAVX2(dst, src *float32, n int, alpha float32)
// For n a multiple of 8: dst[i] = src[i]·sigmoid(alpha·src[i]) (SiLU for
// alpha 1, quick GELU for 1.702).
TEXT ·sigmulAVX2(SB), NOSPLIT, $0-28
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS alpha+24(FP), Y15
	VXORPS expConsts<>+448(SB), Y15, Y15 // −alpha
	SHRQ $3, CX
	JZ   sigdone

sigloop:
	VMOVUPS (SI), Y3
	VMULPS Y15, Y3, Y0
	VMAXPS expConsts<>+0(SB), Y0, Y0
	VMINPS expConsts<>+32(SB), Y0, Y0
	VMULPS expConsts<>+64(SB), Y0, Y1
	VROUNDPS $0, Y1, Y1
	VFNMADD231PS expConsts<>+96(SB), Y1, Y0
	VFNMADD231PS expConsts<>+128(SB), Y1, Y0
	VMOVUPS expConsts<>+160(SB), Y2
	VFMADD213PS expConsts<>+192(SB), Y0, Y2
	VFMADD213PS expConsts<>+224(SB), Y0, Y2
	VFMADD213PS expConsts<>+256(SB), Y0, Y2
	VFMADD213PS expConsts<>+288(SB), Y0, Y2
	VFMADD213PS expConsts<>+320(SB), Y0, Y2
	VFMADD213PS expConsts<>+352(SB), Y0, Y2
	VFMADD213PS expConsts<>+352(SB), Y0, Y2
	VCVTPS2DQ Y1, Y1
	VPADDD expConsts<>+384(SB), Y1, Y1
	VPSLLD $23, Y1, Y1
	VMULPS Y1, Y2, Y2
	VADDPS expConsts<>+352(SB), Y2, Y2
	VDIVPS Y2, Y3, Y3
	VMOVUPS Y3, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	DECQ CX
	JNZ  sigloop

sigdone:
	VZEROUPPER
	RET

// func geluMulAVX2(dst, x, m *float32, n int)
// For n a multiple of 8: dst[i] = GELU(x[i])·m[i], or GELU(x[i]) when m is
// nil, with erf by Abramowitz–Stegun 7.1.26.
TEXT ·geluMulAVX2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ m+16(FP), DX
	MOVQ n+24(FP), CX
	SHRQ $3, CX
	JZ   geludone

geluloop:
	VMOVUPS (SI), Y3
	VMULPS expConsts<>+512(SB), Y3, Y4  // z = x/√2
	VANDPS expConsts<>+416(SB), Y4, Y5 // |z|
	VMOVUPS expConsts<>+352(SB), Y7
	VMOVUPS expConsts<>+544(SB), Y6
	VFMADD213PS Y7, Y5, Y6 // 1 + p·|z|
	VDIVPS Y6, Y7, Y6      // t
	VMOVUPS expConsts<>+704(SB), Y8
	VFMADD213PS expConsts<>+672(SB), Y6, Y8
	VFMADD213PS expConsts<>+640(SB), Y6, Y8
	VFMADD213PS expConsts<>+608(SB), Y6, Y8
	VFMADD213PS expConsts<>+576(SB), Y6, Y8
	VMULPS Y6, Y8, Y8 // poly(t)·t
	VMULPS Y5, Y5, Y0
	VXORPS expConsts<>+448(SB), Y0, Y0 // −z²
	VMAXPS expConsts<>+0(SB), Y0, Y0
	VMINPS expConsts<>+32(SB), Y0, Y0
	VMULPS expConsts<>+64(SB), Y0, Y1
	VROUNDPS $0, Y1, Y1
	VFNMADD231PS expConsts<>+96(SB), Y1, Y0
	VFNMADD231PS expConsts<>+128(SB), Y1, Y0
	VMOVUPS expConsts<>+160(SB), Y2
	VFMADD213PS expConsts<>+192(SB), Y0, Y2
	VFMADD213PS expConsts<>+224(SB), Y0, Y2
	VFMADD213PS expConsts<>+256(SB), Y0, Y2
	VFMADD213PS expConsts<>+288(SB), Y0, Y2
	VFMADD213PS expConsts<>+320(SB), Y0, Y2
	VFMADD213PS expConsts<>+352(SB), Y0, Y2
	VFMADD213PS expConsts<>+352(SB), Y0, Y2
	VCVTPS2DQ Y1, Y1
	VPADDD expConsts<>+384(SB), Y1, Y1
	VPSLLD $23, Y1, Y1
	VMULPS Y1, Y2, Y2
	VFNMADD213PS Y7, Y8, Y2 // erf|z| = 1 − poly·e^(−z²)
	VANDPS expConsts<>+448(SB), Y4, Y4
	VORPS Y4, Y2, Y2 // erf(z), with z's sign
	VADDPS Y7, Y2, Y2
	VMULPS Y3, Y2, Y2
	VMULPS expConsts<>+480(SB), Y2, Y2
	TESTQ DX, DX
	JZ   gelustore
	VMULPS (DX), Y2, Y2
	ADDQ $32, DX

gelustore:
	VMOVUPS Y2, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	DECQ CX
	JNZ  geluloop

geludone:
	VZEROUPPER
	RET
