package httpcache

import "crypto/sha256"

// FetchSpool reports, for the NAR of hash h, whether it is being fetched,
// whether that fetch spools it, and the size of the spool's file (-1 once
// the file is closed).
func FetchSpool(x *PullThrough, h [sha256.Size]byte) (fetching, spooled bool, size int64) {
	x.mu.Lock()
	f := x.fetches[h]
	x.mu.Unlock()
	if f == nil || f.spool == nil {
		return f != nil, false, 0
	}
	st, err := f.spool.f.Stat()
	if err != nil {
		return true, true, -1
	}
	return true, true, st.Size()
}
