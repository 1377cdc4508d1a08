package health

import "github.com/cespare/xxhash/v2"

// Owner picks which of members checks key (for example "service/id") by
// rendezvous, or highest-random-weight, hashing: every member gets a
// pseudo-random weight for the key and the highest wins. Every replica that
// sees the same member list picks the same owner without coordination, and
// when a member joins or leaves only the keys it wins or held move (about
// 1/N of them); consistent hashing would need virtual nodes for that
// balance.
//
// The order of members does not matter. Owner returns "" when members is
// empty. It costs one hash per member and does not allocate.
func Owner(key string, members []string) string {
	kh := xxhash.Sum64String(key)
	var (
		best  string
		bestW uint64
	)
	for i, m := range members {
		w := mix64(kh ^ xxhash.Sum64String(m))
		// Ties (practically only duplicate members) go to the smaller name
		// so the answer does not depend on order.
		if i == 0 || w > bestW || (w == bestW && m < best) {
			best, bestW = m, w
		}
	}
	return best
}

// mix64 is the SplitMix64 finalizer. Comparing bare XORs of the key's and
// the members' hashes would let the highest bit in which two members'
// hashes differ decide between them, so the split would follow the shape of
// the member hashes (3 members could get 50/25/25); the finalizer makes
// every bit of the input matter to the weight.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
