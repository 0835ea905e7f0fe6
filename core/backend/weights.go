package backend

// WeightGroup is the set of weights uploaded through one backend view
// (one model's): they leave device memory together for pinned host memory
// and come back together. Weights with identical content uploaded by
// several groups may be held once by the device and shared; such a weight
// leaves the device only when every group holding it is offloaded.
type WeightGroup interface {
	// Footprint returns the device bytes of the group's weights (shared
	// ones included), the part only this group holds (what offloading it
	// frees), and the pinned host bytes it holds while offloaded.
	Footprint() (device, unique, host int64)
	// Offload copies the group's weights to pinned host memory and frees
	// their device memory; tensors of the group must not be used until
	// Restore.
	Offload() error
	// Restore brings offloaded weights back to the device (a host-to-device
	// copy; the contents are bit-identical) and frees the host copies.
	Restore() error
	// Offloaded reports whether the group is offloaded.
	Offloaded() bool
	// Close releases the group when its model closes: weights no other
	// group holds are freed at once; the group's tensors must not be used
	// again.
	Close() error
}

// WeightGrouper is implemented by backends whose weights can be grouped:
// Grouped returns a view of the backend whose uploads (also through views
// in other activation dtypes derived from it) join a new group.
type WeightGrouper interface {
	Grouped() (Backend, WeightGroup)
}
