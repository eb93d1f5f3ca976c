package pebblestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nixcas/nixcas/castore"
)

// PostgreSQL: the same records, shared by several processes
//
// OpenPostgres keeps the records of the layout (doc.go) in one PostgreSQL
// table of bytea keys and values, whose order is bytewise like Pebble's,
// and the frames under a data directory as before (or in Options.Objects).
// Several processes (replicas of a server) may open the same database at
// once; their data directories may be one and the same.
//
//	nixcas_kv (k bytea PRIMARY KEY, v bytea)   every record but the counters
//	nixcas_counters (shard, pos, v bigint)     the counter vector, in shards:
//	                                           a batch adds its deltas to one
//	                                           shard at random, a read sums
//	nixcas_queue_seq                           queue sequence numbers, taken
//	                                           in blocks of pgSeqBlock
//
// A batch is one transaction; its reads (kvBatch.get) take row locks
// (SELECT ... FOR UPDATE) and its inserts are INSERT ... ON CONFLICT DO
// NOTHING, failing the transaction with errKeyExists when nothing was
// inserted, so a record and its counters are written once whichever
// process wins. Unsynced writes commit with synchronous_commit off: they
// are visible to every process at once and become durable in commit order
// (so a crash of the server never keeps a later write and loses an earlier
// one), and Sync commits a write synchronously, which flushes the log up
// to it.
//
// Advisory locks (pgLockGC, pgLockUses) stand in for the in-process locks
// a collection takes across processes; see gcuse.go for the rule.

// pgTracer, when set (by tests), traces every query of the stores opened
// after.
var pgTracer pgx.QueryTracer

// pgSeqBlock is how many queue sequence numbers a process takes at once.
const pgSeqBlock = 1024

// Advisory lock keys: pgLockGC is held by the one process collecting,
// pgLockUses exclusively by a collection around each deletion batch and
// shared by every recorded use, pgLockSchema while the tables are made.
const (
	pgLockGC     int64 = 0x6e6978636173_01
	pgLockUses   int64 = 0x6e6978636173_02
	pgLockSchema int64 = 0x6e6978636173_03
)

// pgIterPage bounds the rows one iterator query reads: values are at most
// a chunk (256 KiB) and mostly far smaller.
const pgIterPage = 256

// Values of nixcas_kv are stored without compression (STORAGE EXTERNAL):
// most bytes in it are chunks queued for the packer, which compresses
// them with their neighbours a few seconds later, and PostgreSQL's own
// compression of each (pglz) was most of the server's work in an ingest.

// pgCounterShards is how many rows each counter is spread over, so that
// writers of different processes rarely wait for one row.
const pgCounterShards = 16

const pgSchema = `
CREATE TABLE IF NOT EXISTS nixcas_kv (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE IF NOT EXISTS nixcas_counters (shard int NOT NULL, pos int NOT NULL, v bigint NOT NULL, PRIMARY KEY (shard, pos));
CREATE TABLE IF NOT EXISTS nixcas_sync (id int PRIMARY KEY, n bigint NOT NULL);
CREATE SEQUENCE IF NOT EXISTS nixcas_queue_seq INCREMENT BY 1024;
`

// IsPostgresURL reports whether meta names a PostgreSQL database
// (postgres:// or postgresql://).
func IsPostgresURL(meta string) bool {
	return strings.HasPrefix(meta, "postgres://") || strings.HasPrefix(meta, "postgresql://")
}

// OpenPostgres opens (creating its tables if need be) a store whose
// records are in the PostgreSQL database at url and whose frames are under
// dir (created if missing) unless opts.Objects holds them. Other processes
// may open the same database and dir at the same time: dir is not locked.
// Pebble's own options (cache, memtable, value separation) do not apply.
func OpenPostgres(ctx context.Context, url, dir string, opts Options) (*Store, error) {
	if !IsPostgresURL(url) {
		return nil, fmt.Errorf("%w: castore: postgres: %q is not a postgres:// URL", castore.ErrInvalid, url)
	}
	opts = opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "frames"), 0o755); err != nil {
		return nil, fmt.Errorf("castore: postgres: %w", err)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("%w: castore: postgres: %v", castore.ErrInvalid, err)
	}
	if cfg.MaxConns < 32 && !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = 32
	}
	// Writes are unsynced unless a batch asks (see above).
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	if pgTracer != nil {
		cfg.ConnConfig.Tracer = pgTracer
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("castore: postgres: %w", err)
	}
	p := &pgKV{pool: pool, q: pool, cfg: cfg.ConnConfig, where: cfg.ConnConfig.Host + "/" + cfg.ConnConfig.Database}
	if err := p.createSchema(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	var space *spaceGuard
	if !opts.NoSpaceGuard && !opts.ReadOnly {
		space = &spaceGuard{dir: dir, reserve: opts.MinFreeBytes, why: formatMiB(opts.MinFreeBytes)}
		if err := space.admit(0); err != nil {
			pool.Close()
			return nil, fmt.Errorf("castore: postgres: open %s: %w", dir, err)
		}
	}
	// Queued chunks are in PostgreSQL, not in memory: writers wait for
	// the packer only as far as one pack's frames.
	s, err := openStore(dir, opts, p, newStoreFS(opts.ReadOnly, pebbleLogger), space, int64(max(packBatchBytes, opts.Frames.Size)))
	if err != nil {
		return nil, err
	}
	s.writers = pgWriters
	return s, nil
}

var _ castore.WriteConcurrency = (*Store)(nil)

// pgWriters is how many puts a Writer runs at once on PostgreSQL
// (castore.WriteConcurrency): each put waits a round trip or two for the
// server, whatever the cores.
const pgWriters = 8

// WriteConcurrency implements castore.WriteConcurrency: on PostgreSQL more
// puts than cores at once, since each mostly waits for the server; on
// Pebble as many as cores.
func (s *Store) WriteConcurrency() int {
	if s.writers > 0 {
		return s.writers
	}
	return runtime.GOMAXPROCS(0)
}

// pgKV is a kvDB in a PostgreSQL database that several processes share.
type pgKV struct {
	pool  *pgxpool.Pool // nil in a collection's view (gcLock)
	q     pgConn        // the pool, or a collection's connection
	cfg   *pgx.ConnConfig
	where string

	// gcConn is the connection of this process's collection, which
	// holds the advisory locks (gcLock).
	gcConn *pgx.Conn

	seqMu   sync.Mutex
	seqNext uint64 // next number of the block taken
	seqEnd  uint64 // end of the block taken (exclusive)

	// group sends the use records and read-free commits that wait
	// together, one pipeline at a time (pggroup.go).
	group pgGroup
}

var _ kvDB = (*pgKV)(nil)

func (p *pgKV) createSchema(ctx context.Context) error {
	tx, err := p.q.Begin(ctx)
	if err != nil {
		return p.err(err, "open")
	}
	defer tx.Rollback(ctx)
	// Two processes creating the tables at once would collide.
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", pgLockSchema); err != nil {
		return p.err(err, "open")
	}
	if _, err := tx.Exec(ctx, pgSchema); err != nil {
		return p.err(err, "create tables")
	}
	// Values are stored uncompressed (see pgSchema); the table is altered
	// only when it is not yet, since ALTER TABLE waits for every other
	// process's transactions on it.
	var storage string
	err = tx.QueryRow(ctx, "SELECT attstorage::text FROM pg_attribute WHERE attrelid = 'nixcas_kv'::regclass AND attname = 'v'").Scan(&storage)
	if err != nil {
		return p.err(err, "create tables")
	}
	if storage != "e" {
		if _, err := tx.Exec(ctx, "ALTER TABLE nixcas_kv ALTER COLUMN v SET STORAGE EXTERNAL"); err != nil {
			return p.err(err, "create tables")
		}
	}
	return p.err(tx.Commit(ctx), "create tables")
}

// err wraps a PostgreSQL error, nil staying nil.
func (p *pgKV) err(err error, what string) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("castore: postgres %s: %s: %w", p.where, what, err)
}

func (p *pgKV) get(ctx context.Context, key []byte, fn func(v []byte) error) error {
	return pgGet(ctx, p.q, key, "", fn, p)
}

func (p *pgKV) getMany(ctx context.Context, keys [][]byte, fn func(i int, v []byte) error) error {
	return pgGetMany(ctx, p.q, keys, "", "v", fn, p)
}

func (p *pgKV) getManySmall(ctx context.Context, keys [][]byte, n int, fn func(i int, v []byte, size int) error) error {
	return pgGetManySmall(ctx, p.q, keys, "", n, fn, p)
}

// pgGetManySmall is getManySmall on q, suffix appended to each query.
// octet_length of a value stored out of line (see pgSchema) reads only
// its TOAST pointer, and the larger values are not sent.
func pgGetManySmall(ctx context.Context, q pgRowsQuerier, keys [][]byte, suffix string, n int, fn func(i int, v []byte, size int) error, p *pgKV) error {
	var size int32
	value := fmt.Sprintf("CASE WHEN octet_length(v) <= %d THEN v END, octet_length(v)", n)
	return pgGetMany(ctx, q, keys, suffix, value, func(i int, v []byte) error {
		return fn(i, v, int(size))
	}, p, &size)
}

// pgGetMany reads keys in pages of one query each; suffix is appended to
// each query (a lock clause). value is what each key's value is read as
// ("v", or an expression of it); without one ("") it reads only which keys
// exist, and fn is called with nil values. value may select more columns
// than the value: they are scanned into more, before each call of fn.
func pgGetMany(ctx context.Context, q pgRowsQuerier, keys [][]byte, suffix, value string, fn func(i int, v []byte) error, p *pgKV, more ...any) error {
	values := value != ""
	sel, what := "SELECT k, "+value, "get"
	if !values {
		sel, what = "SELECT k", "look up"
	}
	for base := 0; base < len(keys); base += pgGetPage {
		page := keys[base:min(len(keys), base+pgGetPage)]
		at := make(map[string][]int, len(page))
		for i, k := range page {
			at[string(k)] = append(at[string(k)], i)
		}
		// In key order, so that two batches locking overlapping keys
		// never wait for each other in a cycle.
		rows, err := q.Query(ctx, sel+" FROM nixcas_kv WHERE k = ANY($1::bytea[]) ORDER BY k"+suffix, page)
		if err != nil {
			return p.err(err, fmt.Sprintf("%s %d keys", what, len(page)))
		}
		for rows.Next() {
			var k, v []byte
			if values {
				err = rows.Scan(append([]any{&k, &v}, more...)...)
			} else {
				err = rows.Scan(&k)
			}
			if err != nil {
				rows.Close()
				return p.err(err, fmt.Sprintf("%s %d keys", what, len(page)))
			}
			for _, i := range at[string(k)] {
				if err := fn(base+i, v); err != nil {
					rows.Close()
					return err
				}
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return p.err(err, fmt.Sprintf("%s %d keys", what, len(page)))
		}
	}
	return nil
}

// pgGetPage bounds the keys of one getMany query.
const pgGetPage = 1024

// pgRowsQuerier is a pool, a connection or a transaction.
type pgRowsQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// pgConn is a pool or one connection.
type pgConn interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
	Begin(ctx context.Context) (pgx.Tx, error)
}

// pgQuerier is a pool or a transaction.
type pgQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func pgGet(ctx context.Context, q pgQuerier, key []byte, suffix string, fn func(v []byte) error, p *pgKV) error {
	var v []byte
	err := q.QueryRow(ctx, "SELECT v FROM nixcas_kv WHERE k = $1"+suffix, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return errNoKey
	}
	if err != nil {
		return p.err(err, fmt.Sprintf("get %c/%x", key[0], key[1:]))
	}
	return fn(v)
}

func (p *pgKV) has(ctx context.Context, key []byte) (bool, error) {
	var ok bool
	err := p.q.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM nixcas_kv WHERE k = $1)", key).Scan(&ok)
	return ok, p.err(err, "lookup")
}

func (p *pgKV) hasMany(ctx context.Context, keys [][]byte, fn func(i int) error) error {
	return pgGetMany(ctx, p.q, keys, "", "", func(i int, _ []byte) error { return fn(i) }, p)
}

func (p *pgKV) newIter(ctx context.Context, lower, upper []byte) (kvIter, error) {
	if lower == nil {
		lower = []byte{}
	}
	return &pgIter{ctx: ctx, p: p, lower: lower, upper: upper}, nil
}

func (p *pgKV) newBatch() kvBatch { return &pgBatch{p: p} }

func (p *pgKV) set(ctx context.Context, key, value []byte, sync bool) error {
	b := p.newBatch()
	defer b.close()
	b.set(key, value)
	return b.commit(ctx, sync)
}

func (p *pgKV) deleteRange(ctx context.Context, lower, upper []byte) error {
	_, err := p.q.Exec(ctx, "DELETE FROM nixcas_kv WHERE k >= $1 AND k < $2", lower, upper)
	return p.err(err, "delete range")
}

func (p *pgKV) counters(ctx context.Context) ([numCounters]uint64, error) {
	var c [numCounters]uint64
	rows, err := p.q.Query(ctx, "SELECT pos, sum(v)::bigint FROM nixcas_counters GROUP BY pos")
	if err != nil {
		return c, p.err(err, "counters")
	}
	defer rows.Close()
	for rows.Next() {
		var pos int
		var v int64
		if err := rows.Scan(&pos, &v); err != nil {
			return c, p.err(err, "counters")
		}
		if pos >= 0 && pos < numCounters {
			c[pos] = uint64(v)
		}
	}
	return c, p.err(rows.Err(), "counters")
}

func (p *pgKV) nextSeq(ctx context.Context) (uint64, error) {
	p.seqMu.Lock()
	defer p.seqMu.Unlock()
	if p.seqNext == p.seqEnd {
		var start int64
		if err := p.q.QueryRow(ctx, "SELECT nextval('nixcas_queue_seq')").Scan(&start); err != nil {
			return 0, p.err(err, "queue sequence")
		}
		p.seqNext, p.seqEnd = uint64(start), uint64(start)+pgSeqBlock
	}
	p.seqNext++
	return p.seqNext - 1, nil
}

// initSeq does nothing: the sequence is the database's.
func (p *pgKV) initSeq(uint64) {}

// sync commits a write synchronously: PostgreSQL flushes its log up to
// that commit, so every commit before it is durable too.
func (p *pgKV) sync(ctx context.Context) error {
	tx, err := p.q.Begin(ctx)
	if err != nil {
		return p.err(err, "sync")
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SET LOCAL synchronous_commit = on"); err != nil {
		return p.err(err, "sync")
	}
	if _, err := tx.Exec(ctx, "INSERT INTO nixcas_sync VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = nixcas_sync.n + 1"); err != nil {
		return p.err(err, "sync")
	}
	return p.err(tx.Commit(ctx), "sync")
}

func (p *pgKV) shared() bool { return true }

func (p *pgKV) name() string { return "postgres database " + p.where }

// recordUse runs as one pipelined batch, which PostgreSQL runs as one
// implicit transaction: it takes the uses lock shared (so no deletion
// batch of a collection runs meanwhile), inserts the record and looks the
// item up, then commits then's writes (a batch that read nothing; one
// that did is committed on its own after). Calls made while another
// pipeline of the process is out go together in the next (pggroup.go).
func (p *pgKV) recordUse(ctx context.Context, useKey, item []byte, then kvBatch) (bool, error) {
	pb, _ := then.(*pgBatch)
	if then != nil && (pb == nil || pb.tx != nil || pb.err != nil) {
		ok, err := p.recordUse(ctx, useKey, item, nil)
		if err != nil {
			return false, err
		}
		return ok, then.commit(ctx, false)
	}
	if p.pool == nil {
		return p.recordUseAlone(ctx, useKey, item, pb)
	}
	return p.group.do(ctx, p, &pgGroupCall{useKey: useKey, item: item, then: pb})
}

// recordUseAlone is recordUse in a pipeline of its own: then is nil or a
// batch that read nothing.
func (p *pgKV) recordUseAlone(ctx context.Context, useKey, item []byte, pb *pgBatch) (bool, error) {
	var qb pgx.Batch
	qb.Queue("SELECT pg_advisory_xact_lock_shared($1)", pgLockUses)
	qb.Queue("INSERT INTO nixcas_kv (k, v) VALUES ($1, '') ON CONFLICT (k) DO NOTHING", useKey)
	if item != nil {
		qb.Queue("SELECT EXISTS (SELECT 1 FROM nixcas_kv WHERE k = $1)", item)
	}
	if pb != nil {
		pb.queueWrites(&qb)
	}
	br := p.q.SendBatch(ctx, &qb)
	defer br.Close()
	for range 2 {
		if _, err := br.Exec(); err != nil {
			return false, p.recordUseErr(err, pb)
		}
	}
	var ok bool
	if item != nil {
		if err := br.QueryRow().Scan(&ok); err != nil {
			return false, p.recordUseErr(err, pb)
		}
	}
	if err := br.Close(); err != nil {
		return false, p.recordUseErr(err, pb)
	}
	return ok, nil
}

// recordUseErr is the error of a recordUse whose pipeline failed; then's
// writes, part of it, may be why.
func (p *pgKV) recordUseErr(err error, then *pgBatch) error {
	if then != nil {
		return then.writeErr(err)
	}
	return p.err(err, "record use")
}

// gcLock without exclusive opens the collection's own connection, outside
// the pool, and takes the collection lock on it (closing the connection
// releases it). With exclusive, it takes the uses lock on that connection
// and returns a view of the database through it: the uses that wait for
// the lock hold connections of the pool, which the collection must not
// need meanwhile.
func (p *pgKV) gcLock(ctx context.Context, exclusive bool) (kvDB, func(), error) {
	if exclusive {
		conn := p.gcConn
		if conn == nil {
			return nil, nil, fmt.Errorf("castore: postgres: uses lock taken outside a collection")
		}
		if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", pgLockUses); err != nil {
			return nil, nil, p.err(err, "gc lock")
		}
		view := &pgKV{q: conn, cfg: p.cfg, where: p.where}
		return view, func() {
			if _, err := conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", pgLockUses); err != nil {
				conn.Close(context.Background())
			}
		}, nil
	}
	conn, err := pgx.ConnectConfig(ctx, p.cfg.Copy())
	if err != nil {
		return nil, nil, p.err(err, "gc lock")
	}
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", pgLockGC).Scan(&ok); err != nil {
		conn.Close(ctx)
		return nil, nil, p.err(err, "gc lock")
	}
	if !ok {
		conn.Close(ctx)
		return nil, nil, fmt.Errorf("%w (in another process on %s)", ErrGCRunning, p.where)
	}
	p.gcConn = conn
	return p, func() {
		p.gcConn = nil
		conn.Close(context.Background())
	}, nil
}

func (p *pgKV) close() error {
	if p.pool != nil {
		p.pool.Close()
	}
	return nil
}

// pgIter reads [lower, upper) a page at a time, each page a query of its
// own: it sees what was committed before each page was read.
type pgIter struct {
	ctx          context.Context
	p            *pgKV
	lower, upper []byte
	after        []byte // last key read; nil before the first page
	rows         []pgRow
	i            int
	done         bool // the last page is read
	err          error
}

type pgRow struct{ k, v []byte }

func (it *pgIter) First() bool {
	it.after, it.rows, it.i, it.done, it.err = nil, nil, 0, false, nil
	it.fetch()
	return it.Valid()
}

func (it *pgIter) Next() bool {
	it.i++
	if it.i >= len(it.rows) && !it.done && it.err == nil {
		it.fetch()
	}
	return it.Valid()
}

func (it *pgIter) fetch() {
	var (
		sql  strings.Builder
		args []any
	)
	sql.WriteString("SELECT k, v FROM nixcas_kv WHERE ")
	if it.after == nil {
		sql.WriteString("k >= $1")
		args = append(args, it.lower)
	} else {
		sql.WriteString("k > $1")
		args = append(args, it.after)
	}
	if it.upper != nil {
		sql.WriteString(" AND k < $2")
		args = append(args, it.upper)
	}
	fmt.Fprintf(&sql, " ORDER BY k LIMIT %d", pgIterPage)
	rows, err := it.p.q.Query(it.ctx, sql.String(), args...)
	if err != nil {
		it.err = it.p.err(err, "iterate")
		return
	}
	defer rows.Close()
	it.rows, it.i = it.rows[:0], 0
	for rows.Next() {
		var r pgRow
		if err := rows.Scan(&r.k, &r.v); err != nil {
			it.err = it.p.err(err, "iterate")
			return
		}
		it.rows = append(it.rows, r)
	}
	if err := rows.Err(); err != nil {
		it.err = it.p.err(err, "iterate")
		return
	}
	if len(it.rows) < pgIterPage {
		it.done = true
	}
	if len(it.rows) > 0 {
		it.after = it.rows[len(it.rows)-1].k
	}
}

func (it *pgIter) Valid() bool                  { return it.err == nil && it.i < len(it.rows) }
func (it *pgIter) Key() []byte                  { return it.rows[it.i].k }
func (it *pgIter) ValueAndErr() ([]byte, error) { return it.rows[it.i].v, nil }
func (it *pgIter) Error() error                 { return it.err }
func (it *pgIter) Close() error                 { return it.err }

// pgBatch is a kvBatch of a pgKV: one transaction, begun by its first
// read or at commit.
type pgBatch struct {
	p     *pgKV
	tx    pgx.Tx
	ops   []pgOp
	delta []uint64
	bytes int
	err   error
}

type pgOpKind int

const (
	pgSet pgOpKind = iota
	pgInsert
	pgDelete
)

type pgOp struct {
	kind pgOpKind
	k, v []byte
}

func (b *pgBatch) begin(ctx context.Context) error {
	if b.tx != nil || b.err != nil {
		return b.err
	}
	tx, err := b.p.q.Begin(ctx)
	if err != nil {
		b.err = b.p.err(err, "begin")
		return b.err
	}
	b.tx = tx
	return nil
}

func (b *pgBatch) get(ctx context.Context, key []byte, fn func(v []byte) error) error {
	if err := b.begin(ctx); err != nil {
		return err
	}
	return pgGet(ctx, b.tx, key, " FOR UPDATE", fn, b.p)
}

func (b *pgBatch) getMany(ctx context.Context, keys [][]byte, fn func(i int, v []byte) error) error {
	if err := b.begin(ctx); err != nil {
		return err
	}
	return pgGetMany(ctx, b.tx, keys, " FOR UPDATE", "v", fn, b.p)
}

func (b *pgBatch) getManySmall(ctx context.Context, keys [][]byte, n int, fn func(i int, v []byte, size int) error) error {
	if err := b.begin(ctx); err != nil {
		return err
	}
	return pgGetManySmall(ctx, b.tx, keys, " FOR UPDATE", n, fn, b.p)
}

func (b *pgBatch) add(kind pgOpKind, key, value []byte) {
	b.ops = append(b.ops, pgOp{kind: kind, k: append([]byte(nil), key...), v: append([]byte{}, value...)})
	b.bytes += len(key) + len(value)
}

func (b *pgBatch) set(key, value []byte)    { b.add(pgSet, key, value) }
func (b *pgBatch) insert(key, value []byte) { b.add(pgInsert, key, value) }
func (b *pgBatch) delete(key []byte)        { b.add(pgDelete, key, nil) }

func (b *pgBatch) addCounters(delta []uint64) {
	if len(delta) > len(b.delta) {
		b.delta = append(b.delta, make([]uint64, len(delta)-len(b.delta))...)
	}
	for i, x := range delta {
		b.delta[i] += x
	}
}

func (b *pgBatch) size() int   { return b.bytes + 8*len(b.delta) }
func (b *pgBatch) empty() bool { return len(b.ops) == 0 && len(b.delta) == 0 }

// commit sends the writes in one round trip. A batch that read nothing
// (no transaction open) and is not synced is one pipeline, which
// PostgreSQL runs as one implicit transaction, shared with the commits
// and use records waiting at the same time (pggroup.go); otherwise the pipeline
// runs in the batch's transaction, committed after it (two more round
// trips). Runs of writes of one kind are one statement each (see
// queueWrites); an insert that meets an existing key fails the statement
// and so the whole transaction, reported as errKeyExists. A failed commit
// rolls back at once: the transaction may hold row locks (a counter's)
// that the caller's next batch needs.
func (b *pgBatch) commit(ctx context.Context, sync bool) error {
	err := b.commitTx(ctx, sync)
	if err != nil {
		b.close()
	}
	return err
}

func (b *pgBatch) commitTx(ctx context.Context, sync bool) error {
	if b.err != nil {
		return b.err
	}
	var qb pgx.Batch
	if b.tx == nil && !sync {
		if b.empty() {
			return nil
		}
		if b.p.pool != nil {
			_, err := b.p.group.do(ctx, b.p, &pgGroupCall{then: b})
			return err
		}
		return b.commitAlone(ctx)
	}
	if err := b.begin(ctx); err != nil {
		return err
	}
	if sync {
		qb.Queue("SET LOCAL synchronous_commit = on")
	}
	b.queueWrites(&qb)
	if err := b.sendWrites(b.tx.SendBatch(ctx, &qb)); err != nil {
		return err
	}
	err := b.tx.Commit(ctx)
	b.tx = nil
	return b.p.err(err, "commit")
}

// commitAlone commits a batch that read nothing, unsynced, in a pipeline
// of its own.
func (b *pgBatch) commitAlone(ctx context.Context) error {
	var qb pgx.Batch
	b.queueWrites(&qb)
	return b.sendWrites(b.p.q.SendBatch(ctx, &qb))
}

// sendWrites reads the results of a pipeline of queueWrites.
func (b *pgBatch) sendWrites(br pgx.BatchResults) error {
	return b.writeErr(br.Close())
}

// writeErr translates the error of a pipeline of queueWrites.
func (b *pgBatch) writeErr(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == pgUniqueViolation && pgErr.TableName == "nixcas_kv" {
		return errKeyExists
	}
	return b.p.err(err, "commit")
}

// pgUniqueViolation is PostgreSQL's error code for a duplicate key.
const pgUniqueViolation = "23505"

// queueWrites queues the batch's writes: inserts first (plain inserts,
// which fail on an existing key), then the sets and deletes in order,
// then the counters, each kind in one statement over arrays (one
// statement may not change a row twice, so a key written again starts
// new statements).
func (b *pgBatch) queueWrites(qb *pgx.Batch) {
	var ins [][2][]byte
	for _, op := range b.ops {
		if op.kind == pgInsert {
			ins = append(ins, [2][]byte{op.k, op.v})
		}
	}
	if len(ins) > 0 {
		// In key order, so that two pipelines inserting overlapping
		// keys never wait for each other in a cycle.
		slices.SortFunc(ins, func(a, b [2][]byte) int { return bytes.Compare(a[0], b[0]) })
		ks, vs := make([][]byte, len(ins)), make([][]byte, len(ins))
		for i, kv := range ins {
			ks[i], vs[i] = kv[0], kv[1]
		}
		qb.Queue("INSERT INTO nixcas_kv (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[])", ks, vs)
	}
	// Writes of distinct keys commute: the sets and the deletes up to a
	// key's second write are two statements.
	var (
		setK, setV, delK [][]byte
		seen             = make(map[string]bool)
	)
	flush := func() {
		if len(setK) > 0 {
			qb.Queue("INSERT INTO nixcas_kv (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) ON CONFLICT (k) DO UPDATE SET v = excluded.v", setK, setV)
		}
		if len(delK) > 0 {
			qb.Queue("DELETE FROM nixcas_kv WHERE k = ANY($1::bytea[])", delK)
		}
		setK, setV, delK = nil, nil, nil
		clear(seen)
	}
	for _, op := range b.ops {
		if op.kind == pgInsert {
			continue
		}
		if seen[string(op.k)] {
			flush()
		}
		seen[string(op.k)] = true
		if op.kind == pgSet {
			setK, setV = append(setK, op.k), append(setV, op.v)
		} else {
			delK = append(delK, op.k)
		}
	}
	flush()
	var pos []int32
	var vals []int64
	for i, x := range b.delta {
		if x != 0 {
			pos = append(pos, int32(i))
			vals = append(vals, int64(x))
		}
	}
	if len(pos) > 0 {
		qb.Queue(`INSERT INTO nixcas_counters (shard, pos, v) SELECT $1, p, d FROM unnest($2::int[], $3::bigint[]) AS t(p, d)
ON CONFLICT (shard, pos) DO UPDATE SET v = nixcas_counters.v + excluded.v`, rand.IntN(pgCounterShards), pos, vals)
	}
}

func (b *pgBatch) close() {
	if b.tx != nil {
		b.tx.Rollback(context.Background())
		b.tx = nil
	}
}
