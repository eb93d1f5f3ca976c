package twogen

import "unsafe"

// ShardSize is the size of one shard, in bytes.
func ShardSize() uintptr { return unsafe.Sizeof(shard[int, int]{}) }
