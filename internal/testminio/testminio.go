package testminio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Credentials of every server this package starts.
const (
	AccessKey = "nixcas-test"
	SecretKey = "nixcas-test-secret"
	// Bucket is created on the first start.
	Bucket = "nixcas"
)

// Binary returns the path of the MinIO binary tests use.
func Binary() string {
	if p := os.Getenv("NIXCAS_MINIO"); p != "" {
		return p
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "nixcas", "bin", "minio")
}

// Server is a MinIO server run by a test.
type Server struct {
	// Addr is HOST:PORT of the S3 API, the same across restarts.
	Addr string

	t       testing.TB
	bin     string
	dataDir string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start starts a server with an empty bucket; the test's cleanup stops it.
// When the port it picked is taken before MinIO binds it (by another
// test's server, or any socket), it tries another port, a few times.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("testminio: MinIO binary %s: %v (scripts/test-deps.sh builds it)", bin, err)
	}
	dir := t.TempDir()
	s := &Server{
		t:       t,
		bin:     bin,
		dataDir: filepath.Join(dir, "data"),
		logPath: filepath.Join(dir, "minio.log"),
	}
	t.Cleanup(s.Stop)
	const attempts = 5
	for i := 1; ; i++ {
		s.Addr = pickAddr(t)
		err := s.launch()
		if err == nil {
			break
		}
		if !errors.Is(err, errAddrTaken) || i == attempts {
			t.Fatalf("testminio: starting MinIO (attempt %d of %d): %v", i, attempts, err)
		}
		t.Logf("testminio: trying another port: %v", err)
	}
	client := s.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := client.MakeBucket(ctx, Bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("testminio: creating bucket %s: %v", Bucket, err)
	}
	return s
}

// pickAddr returns the address of a first start; a test of this package
// replaces it to hand out a port it has taken.
var pickAddr = freeAddr

// freeAddr returns a loopback address with a port free right now.
func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testminio: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// errAddrTaken is the error of a launch that found its address taken.
var errAddrTaken = errors.New("address taken by another process")

// Start starts the server again after Stop, on the same port, and waits
// until it answers. It does nothing when the server runs. The test fails
// when the port was taken while the server was stopped.
func (s *Server) Start() {
	s.t.Helper()
	err := s.launch()
	if errors.Is(err, errAddrTaken) {
		s.t.Fatalf("testminio: restarting MinIO: its port was taken while it was stopped (the test would talk to another server): %v", err)
	}
	if err != nil {
		s.t.Fatalf("testminio: restarting MinIO: %v", err)
	}
}

// launch starts MinIO on s.Addr and waits until it answers and is the
// only listener on the port. It does nothing when the server runs. On
// failure the process is stopped, and the error is errAddrTaken when
// another process holds the port.
func (s *Server) launch() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	logStart, err := logf.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.bin, "server", "--quiet", "--address", s.Addr, s.dataDir)
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+AccessKey,
		"MINIO_ROOT_PASSWORD="+SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_CI_CD=1",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	if err := s.waitReady(cmd.Process.Pid, done); err != nil {
		s.stopLocked()
		log, _ := os.ReadFile(s.logPath)
		if int64(len(log)) >= logStart {
			log = log[logStart:]
		}
		if !errors.Is(err, errAddrTaken) && bytes.Contains(log, []byte("already in use")) {
			err = fmt.Errorf("%w: %v", errAddrTaken, err)
		}
		return fmt.Errorf("MinIO on %s did not become ready: %w\n%s", s.Addr, err, tail(string(log), 2000))
	}
	return nil
}

// waitReady polls the readiness endpoint, then the S3 API (which may
// answer "server not initialized" a little longer), for up to a minute,
// then checks that the server answering is process pid, alone on its port.
func (s *Server) waitReady(pid int, done <-chan struct{}) error {
	deadline := time.Now().Add(time.Minute)
	client := &http.Client{Timeout: 2 * time.Second}
	s3 := s.Client()
	for {
		resp, err := client.Get("http://" + s.Addr + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err = s3.ListBuckets(ctx)
				cancel()
				if err == nil {
					return listensAlone(pid, s.Addr)
				}
			} else {
				err = errors.New(resp.Status)
			}
		}
		select {
		case <-done:
			return errors.New("the process exited")
		default:
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the server, keeping its data for Start. It does nothing when
// the server is stopped.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	// The whole process group: MinIO starts no children, but be sure the
	// port is free for a restart.
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
	s.cmd, s.done = nil, nil
}

// Credentials returns the server's credentials.
func (s *Server) Credentials() *credentials.Credentials {
	return credentials.NewStaticV4(AccessKey, SecretKey, "")
}

// Env returns the AWS environment variables with the server's
// credentials, for a process that takes them from its environment.
func (s *Server) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + AccessKey, "AWS_SECRET_ACCESS_KEY=" + SecretKey}
}

// URL returns the s3:// URL of prefix in the bucket (plain HTTP,
// path-style), with extra query parameters (k=v&...) appended.
func (s *Server) URL(prefix, extra string) string {
	u := fmt.Sprintf("s3://%s/%s?endpoint=%s&tls=false&addressing=path", Bucket, strings.Trim(prefix, "/"), s.Addr)
	if extra != "" {
		u += "&" + extra
	}
	return u
}

// Client returns a MinIO client of the server.
func (s *Server) Client() *minio.Client {
	c, err := minio.New(s.Addr, &minio.Options{Creds: s.Credentials(), BucketLookup: minio.BucketLookupPath, MaxRetries: 1})
	if err != nil {
		s.t.Fatalf("testminio: %v", err)
	}
	return c
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
