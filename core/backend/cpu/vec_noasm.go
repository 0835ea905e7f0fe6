//go:build !amd64 || purego

package cpu

func hasVec() bool { return false }

func expScaleVec(x []float32, scale, shift float32) (int, float32) { return 0, 0 }

func maxVec(x []float32) (int, float32) { return 0, 0 }

func sigmulVec(dst, src []float32, alpha float32) int { return 0 }

func geluMulVec(dst, x, m []float32) int { return 0 }
