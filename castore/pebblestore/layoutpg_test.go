package pebblestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/internal/testpg"
)

// TestLayoutVersionPostgres: a store on PostgreSQL checks the layout
// version as a Pebble store does, in the same words, naming the database:
// a version above this binary's is refused at open (read-only or not);
// a store already open refuses everything once it reads the version
// again (a collection at its start, every operation within
// layoutRecheck), when a process of a newer binary raised it meanwhile;
// and raising the version never lowers one above it.
func TestLayoutVersionPostgres(t *testing.T) {
	ctx := context.Background()
	url, dir := testpg.New(t), t.TempDir()
	open := func(readOnly bool) (*Store, error) {
		return OpenPostgres(ctx, url, dir, Options{ReadOnly: readOnly, Frames: FrameOptions{Off: true}})
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// setVersion writes v as the layout version, as another process
	// would.
	setVersion := func(t *testing.T, v []byte) {
		t.Helper()
		if _, err := conn.Exec(ctx, "UPDATE nixcas_kv SET v = $2 WHERE k = $1", pebbleVersionKey, v); err != nil {
			t.Fatal(err)
		}
	}
	version := func(t *testing.T) uint64 {
		t.Helper()
		var v []byte
		if err := conn.QueryRow(ctx, "SELECT v FROM nixcas_kv WHERE k = $1", pebbleVersionKey).Scan(&v); err != nil {
			t.Fatal(err)
		}
		got, _ := binary.Uvarint(v)
		return got
	}

	s, err := open(false)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("layout "), 1000)
	if _, err := s.PutChunk(ctx, castore.NewChunk(chunk)); err != nil {
		t.Fatal(err)
	}
	where := s.db.name()
	if !strings.HasPrefix(where, "postgres database 127.0.0.1/") {
		t.Fatalf("database named %q", where)
	}
	s.Close()
	if v := version(t); v != layoutFrames {
		t.Fatalf("layout version of a new store %d, want %d", v, layoutFrames)
	}

	for _, tc := range []struct {
		name    string
		version []byte
		want    error
		message string
	}{
		{"newer", binary.AppendUvarint(nil, pebbleLayoutVersion+1), castore.ErrInvalid,
			fmt.Sprintf("store layout version %d is newer than this binary (%d): open it with a newer nixcas", pebbleLayoutVersion+1, pebbleLayoutVersion)},
		{"much newer", binary.AppendUvarint(nil, 1000), castore.ErrInvalid,
			fmt.Sprintf("store layout version 1000 is newer than this binary (%d)", pebbleLayoutVersion)},
		{"zero", []byte{0}, castore.ErrCorrupt, "layout version record 00 is not a version"},
		{"truncated", []byte{0x80}, castore.ErrCorrupt, "layout version record 80 is not a version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setVersion(t, tc.version)
			for _, readOnly := range []bool{false, true} {
				s, err := open(readOnly)
				if err == nil {
					s.Close()
					t.Fatalf("opened (read-only %v) a store of layout version record %x", readOnly, tc.version)
				}
				if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.message) || !strings.Contains(err.Error(), where) {
					t.Fatalf("open (read-only %v): %v; want %v naming %s and saying %q", readOnly, err, tc.want, where, tc.message)
				}
			}
		})
	}
	setVersion(t, binary.AppendUvarint(nil, layoutFrames))

	t.Run("raised while open", func(t *testing.T) {
		s, err := open(false)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if got, err := s.GetChunk(ctx, castore.Hash(chunk), nil); err != nil || !bytes.Equal(got, chunk) {
			t.Fatalf("GetChunk: %d bytes, %v", len(got), err)
		}
		// Raising to what the store has needs no write; raising to a
		// version this binary does not know is refused.
		if err := requireLayout(ctx, s.db, layoutRuns); err != nil {
			t.Fatal(err)
		}
		if err := requireLayout(ctx, s.db, pebbleLayoutVersion+1); !errors.Is(err, castore.ErrInvalid) {
			t.Fatalf("requireLayout above this binary: %v, want ErrInvalid", err)
		}
		if v := version(t); v != layoutRuns {
			t.Fatalf("layout version %d, want %d", v, layoutRuns)
		}

		setVersion(t, binary.AppendUvarint(nil, pebbleLayoutVersion+1))
		newer := fmt.Sprintf("%s: store layout version %d is newer than this binary", where, pebbleLayoutVersion+1)
		check := func(what string, err error) {
			t.Helper()
			if !errors.Is(err, castore.ErrInvalid) || !strings.Contains(err.Error(), newer) {
				t.Errorf("%s: %v; want ErrInvalid saying %q", what, err, newer)
			}
		}
		// Not lowered by a process that needs less.
		check("requireLayout", requireLayout(ctx, s.db, layoutRuns))
		if v := version(t); v != pebbleLayoutVersion+1 {
			t.Errorf("layout version %d after requireLayout, want %d left as it was", v, pebbleLayoutVersion+1)
		}
		_, err = s.GC(ctx, GCOptions{Roots: func(context.Context, func(string, castore.Entry) error) error { return nil }})
		check("GC", err)
		// Every operation once the store reads the version again (as
		// if layoutRecheck had passed).
		s.layoutChecked.Store(0)
		_, err = s.GetChunk(ctx, castore.Hash(chunk), nil)
		check("GetChunk", err)
		_, err = s.PutChunk(ctx, castore.NewChunk([]byte("another chunk")))
		check("PutChunk", err)
		_, err = s.Stats(ctx)
		check("Stats", err)
	})
}
