package main

import (
	"io"
	"os"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// newProgress returns a byte-counting writer that draws a progress bar on
// stderr when stderr is a terminal, and does nothing otherwise. size < 0
// means unknown.
func newProgress(size int64, what string) progress {
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		return quietProgress{}
	}
	return barProgress{progressbar.DefaultBytes(size, what)}
}

type progress interface {
	io.Writer
	// Add64 counts n more bytes done, for work that is not a stream.
	Add64(n int64) error
	Finish()
}

type quietProgress struct{}

func (quietProgress) Write(p []byte) (int, error) { return len(p), nil }
func (quietProgress) Add64(int64) error           { return nil }
func (quietProgress) Finish()                     {}

type barProgress struct{ *progressbar.ProgressBar }

func (b barProgress) Finish() { b.ProgressBar.Finish() }
