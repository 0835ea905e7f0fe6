//go:build !unix

package broker

// dirLock is a no-op where flock is unavailable.
type dirLock struct{}

func lockDir(string) (*dirLock, error) { return &dirLock{}, nil }

func (l *dirLock) release() error { return nil }
