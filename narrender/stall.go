package narrender

import (
	"io"
	"os"
	"time"

	"github.com/nixcas/nixcas/castore"
)

// StallAfter is how long a write of a rendered NAR may block before the
// render counts its reader as stalled: it then stops fetching ahead and
// frees the chunks it had fetched ahead, so that a client that stops
// reading pins little memory (see castore.Fetcher.Blocked). Reading
// resumes, fetching again what was freed, once the write returns.
const StallAfter = 250 * time.Millisecond

// stallGuard tells the render's fetcher when a write to the output blocks.
type stallGuard struct {
	w io.Writer
	f *castore.Fetcher
}

func (g stallGuard) Write(p []byte) (int, error) {
	end := g.f.Blocked(StallAfter)
	defer end()
	return g.w.Write(p)
}

// sender returns fs guarded as Write is (nil for nil).
func (g stallGuard) sender(fs FileSender) FileSender {
	if fs == nil {
		return nil
	}
	return stallSender{fs, g.f}
}

// stallSender tells the render's fetcher when a send to the output
// blocks.
type stallSender struct {
	fs FileSender
	f  *castore.Fetcher
}

func (g stallSender) SendFile(f *os.File, n int64) (int64, error) {
	end := g.f.Blocked(StallAfter)
	defer end()
	return g.fs.SendFile(f, n)
}
