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
// (queueWrites) and their counters summed into one row update. While one
// pipeline is out, the calls that arrive wait and go in the next, sent by
// the first of them; a call that finds none out is sent at once, alone,
// so nothing waits for a timer.
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

// pgGroup is the group of one pgKV (see above). Its zero value is ready.
type pgGroup struct {
	mu      sync.Mutex
	sending bool // a pipeline is out; the next one is sent by its sender or a waiter
	waiting []*pgGroupCall
}

// pgGroupCall is one recordUse (useKey set; item, when set, looked up)
// or one commit of a batch that read nothing (useKey nil), then.
type pgGroupCall struct {
	useKey, item []byte
	then         *pgBatch

	found bool
	err   error
	// wake is signalled when the call is done, or, not done, when it
	// is to send the next pipeline.
	wake chan struct{}
	done bool
}

// do runs c, grouped with the calls waiting meanwhile, and returns
// whether c.item exists (for a use record) and its error.
func (g *pgGroup) do(ctx context.Context, p *pgKV, c *pgGroupCall) (bool, error) {
	c.wake = make(chan struct{}, 1)
	g.mu.Lock()
	g.waiting = append(g.waiting, c)
	if g.sending {
		g.mu.Unlock()
		<-c.wake
		g.mu.Lock()
		if c.done {
			g.mu.Unlock()
			return c.found, c.err
		}
		// c is to send the next pipeline, with itself in it.
	}
	g.sending = true
	for {
		n, bytes := 0, 0
		for n < len(g.waiting) && n < pgGroupMax && bytes < pgGroupMaxBytes {
			if t := g.waiting[n].then; t != nil {
				bytes += t.size()
			}
			n++
		}
		calls := append([]*pgGroupCall(nil), g.waiting[:n]...)
		g.waiting = append(g.waiting[:0], g.waiting[n:]...)
		g.mu.Unlock()
		// A pipeline that carries other callers' writes is not
		// cancelled with the sender's context. (A waiting call is not
		// bounded by its own either: it waits for a pipeline out.)
		sctx := ctx
		if len(calls) > 1 || calls[0] != c {
			sctx = context.WithoutCancel(ctx)
		}
		p.sendGroup(sctx, calls)
		g.mu.Lock()
		for _, d := range calls {
			d.done = true
			if d != c {
				d.wake <- struct{}{}
			}
		}
		if len(g.waiting) == 0 {
			g.sending = false
			g.mu.Unlock()
			return c.found, c.err
		}
		if c.done {
			// The next pipeline is the first waiter's to send.
			g.waiting[0].wake <- struct{}{}
			g.mu.Unlock()
			return c.found, c.err
		}
	}
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
