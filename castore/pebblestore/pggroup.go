package pebblestore

import (
	"bytes"
	"context"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"
)

// Group commits on PostgreSQL
//
// Writers put chunks, blobs and directories many at a time (8 puts at
// once per process on PostgreSQL), and each put is a use record with a
// lookup (recordUse) and, for a new item, a batch that read nothing: a
// round trip each, and a statement each for PostgreSQL to parse, plan and
// commit. pgGroup sends those that wait together as one pipeline, in
// one implicit transaction: the use records in one INSERT, the lookups in
// one SELECT, the batches' writes merged into one of each kind
// (queueWrites) and their counters summed into one row update. While
// pgGroupPipelines pipelines are out, the calls that arrive wait and go
// together in the next, sent by the first of them when a pipeline
// returns; a call that finds fewer out is sent at once, so nothing waits
// for a timer.
//
// A merged pipeline applies all of its calls or none. When it fails (an
// insert that met an existing key, errKeyExists, which may be one call's
// alone; or any other error), each call is sent again on its own, as
// before grouping, and gets its own result: a call's outcome never
// depends on the others'. The use lock is taken in shared mode, as a
// single recordUse takes it, when any call records a use.

// pgGroupMax bounds one merged pipeline: calls, and bytes of their
// writes.
const (
	pgGroupMax      = 64
	pgGroupMaxBytes = 8 << 20
)

// pgGroupPipelines is how many pipelines of grouped calls a process has
// out at once. One groups the most: ingest of a 52 MB NAR (the Go 1.26
// sources of cmd/) into PostgreSQL 15 and MinIO on two cores cost 120
// round trips a MiB and 48 to 52 s of the server's CPU a GiB with one,
// 233 to 240 and 71 to 78 s with four, 330 and 84 to 102 s ungrouped
// (BenchmarkPostgresIngest); the wall-clock times of the three, on a
// machine loaded by other work, were within their noise.
const pgGroupPipelines = 1

// pgGroup is the group of one pgKV (see above). Its zero value is ready.
type pgGroup struct {
	mu      sync.Mutex
	out     int            // pipelines out; calls wait only when pgGroupPipelines are
	waiting []*pgGroupCall // calls waiting, oldest first; only when out is at its bound
}

// pgGroupCall is one recordUse (useKey set; item, when set, looked up)
// or one commit of a batch that read nothing (useKey nil), then.
type pgGroupCall struct {
	useKey, item []byte
	then         *pgBatch

	found bool
	err   error
	// wake is signalled once, when the call is done or, not done, when
	// it is handed a pipeline to send (it is then no longer waiting).
	wake chan struct{}
	done bool
}

// do runs c, with the calls waiting when it is sent, and returns whether
// c.item exists (for a use record) and its error.
func (g *pgGroup) do(ctx context.Context, p *pgKV, c *pgGroupCall) (bool, error) {
	g.mu.Lock()
	if g.out >= pgGroupPipelines {
		c.wake = make(chan struct{}, 1) // only a call that waits is woken
		g.waiting = append(g.waiting, c)
		g.mu.Unlock()
		select {
		case <-c.wake:
		case <-ctx.Done():
			// A call still waiting leaves, sending nothing; one taken
			// into a pipeline, or handed one to send, goes on.
			g.mu.Lock()
			if i := slices.Index(g.waiting, c); i >= 0 {
				g.waiting = slices.Delete(g.waiting, i, i+1)
				g.mu.Unlock()
				return false, ctx.Err()
			}
			g.mu.Unlock()
			<-c.wake
		}
		g.mu.Lock()
		if c.done {
			g.mu.Unlock()
			return c.found, c.err
		}
		// c was handed the pipeline of a call done.
	} else {
		g.out++
	}
	calls, bytes := []*pgGroupCall{c}, c.size()
	n := 0
	for n < len(g.waiting) && len(calls) < pgGroupMax && bytes < pgGroupMaxBytes {
		calls = append(calls, g.waiting[n])
		bytes += g.waiting[n].size()
		n++
	}
	g.waiting = append(g.waiting[:0], g.waiting[n:]...)
	g.mu.Unlock()
	// A pipeline that carries other callers' writes is not cancelled
	// with the sender's context. (A call that waits leaves when its own
	// context ends, unless a pipeline has taken it.)
	sctx := ctx
	if len(calls) > 1 {
		sctx = context.WithoutCancel(ctx)
	}
	p.sendGroup(sctx, calls)
	g.mu.Lock()
	for _, d := range calls[1:] {
		d.done = true
		d.wake <- struct{}{}
	}
	if len(g.waiting) > 0 {
		// This pipeline is the first waiting call's to send.
		next := g.waiting[0]
		g.waiting = g.waiting[1:]
		next.wake <- struct{}{}
	} else {
		g.out--
	}
	g.mu.Unlock()
	return c.found, c.err
}

// size is the bytes of c's writes.
func (c *pgGroupCall) size() int {
	if c.then == nil {
		return 0
	}
	return c.then.size()
}

// sendGroup sends calls as one pipeline, or, should that fail, each on
// its own; it sets each call's found and err.
func (p *pgKV) sendGroup(ctx context.Context, calls []*pgGroupCall) {
	if len(calls) == 1 {
		calls[0].found, calls[0].err = p.sendAlone(ctx, calls[0])
		return
	}
	var (
		qb      pgx.Batch
		uses    [][]byte
		items   [][]byte
		merged  = &pgBatch{p: p}
		seenUse = make(map[string]bool)
	)
	for _, c := range calls {
		if c.useKey != nil && !seenUse[string(c.useKey)] {
			seenUse[string(c.useKey)] = true
			uses = append(uses, c.useKey)
		}
		if c.item != nil {
			items = append(items, c.item)
		}
		if c.then != nil {
			merged.ops = append(merged.ops, c.then.ops...)
			merged.addCounters(c.then.delta)
		}
	}
	if len(uses) > 0 {
		// In key order, as queueWrites inserts (no cycle of waits).
		slices.SortFunc(uses, bytes.Compare)
		qb.Queue("SELECT pg_advisory_xact_lock_shared($1)", pgLockUses)
		qb.Queue("INSERT INTO nixcas_kv (k, v) SELECT k, '' FROM unnest($1::bytea[]) AS t(k) ON CONFLICT (k) DO NOTHING", uses)
	}
	found := make(map[string]bool)
	if len(items) > 0 {
		qb.Queue("SELECT k FROM nixcas_kv WHERE k = ANY($1::bytea[])", items).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var k []byte
				if err := rows.Scan(&k); err != nil {
					return err
				}
				found[string(k)] = true
			}
			return rows.Err()
		})
	}
	merged.queueWrites(&qb)
	if err := p.q.SendBatch(ctx, &qb).Close(); err != nil {
		for _, c := range calls {
			c.found, c.err = p.sendAlone(ctx, c)
		}
		return
	}
	for _, c := range calls {
		c.found = c.item != nil && found[string(c.item)]
	}
}

// sendAlone sends one call in a pipeline of its own.
func (p *pgKV) sendAlone(ctx context.Context, c *pgGroupCall) (bool, error) {
	if c.useKey != nil {
		return p.recordUseAlone(ctx, c.useKey, c.item, c.then)
	}
	return false, c.then.commitAlone(ctx)
}
