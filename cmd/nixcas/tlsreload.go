package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// tlsCheckEvery is how often, at most, a handshake looks at whether the
// certificate or key file changed.
var tlsCheckEvery = time.Second

// certFiles serves the certificate of a --tls-cert and --tls-key pair,
// read again when either file changes (a renewal writes new files, or
// points a symlink at them): a handshake at most tlsCheckEvery after the
// last look stats both, and reloads the pair if either's size, time or
// inode moved. A pair that does not load (a renewal half-written, a key
// that does not match) is logged and the certificate in use kept; it is
// tried again once either file changes again.
type certFiles struct {
	certFile, keyFile string

	mu      sync.Mutex
	cert    *tls.Certificate
	seen    [2]fileStamp // of certFile and keyFile when cert was loaded or last failed
	checked time.Time
}

// fileStamp is what tells a file changed.
type fileStamp struct {
	size  int64
	mtime time.Time
	ino   uint64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{size: fi.Size(), mtime: fi.ModTime(), ino: inodeOf(fi)}, nil
}

// loadCertFiles reads the pair once, failing when it does not load.
func loadCertFiles(certFile, keyFile string) (*certFiles, error) {
	c := &certFiles{certFile: certFile, keyFile: keyFile}
	stamps, err := c.stamps()
	if err == nil {
		err = c.load(stamps)
	}
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s, --tls-key %s: %w", certFile, keyFile, err)
	}
	c.checked = time.Now()
	return c, nil
}

func (c *certFiles) stamps() ([2]fileStamp, error) {
	var s [2]fileStamp
	var err error
	if s[0], err = stampOf(c.certFile); err != nil {
		return s, err
	}
	s[1], err = stampOf(c.keyFile)
	return s, err
}

// load reads the pair, stamped so; called holding mu (or before c is
// shared).
func (c *certFiles) load(stamps [2]fileStamp) error {
	c.seen = stamps
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return err
	}
	c.cert = &cert
	return nil
}

// GetCertificate is the tls.Config hook.
func (c *certFiles) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); now.Sub(c.checked) >= tlsCheckEvery {
		c.checked = now
		c.reloadIfChanged()
	}
	return c.cert, nil
}

// reloadIfChanged reloads the pair if a file changed since the last look;
// called holding mu.
func (c *certFiles) reloadIfChanged() {
	stamps, err := c.stamps()
	if err != nil {
		if stamps != c.seen {
			slog.Warn("serve: TLS certificate files unreadable; keeping the certificate in use", "cert", c.certFile, "key", c.keyFile, "err", err)
			c.seen = stamps
		}
		return
	}
	if stamps == c.seen {
		return
	}
	if err := c.load(stamps); err != nil {
		slog.Warn("serve: TLS certificate files changed but do not load; keeping the certificate in use", "cert", c.certFile, "key", c.keyFile, "err", err)
		return
	}
	args := []any{"cert", c.certFile, "key", c.keyFile}
	if leaf := c.cert.Leaf; leaf != nil {
		args = append(args, "notAfter", leaf.NotAfter)
	}
	slog.Info("serve: TLS certificate reloaded", args...)
}
