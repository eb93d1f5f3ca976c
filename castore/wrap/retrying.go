package wrap

import (
	"context"
	"fmt"
	"time"

	"github.com/nixcas/nixcas/castore"
)

// RetryOptions configure Retrying.
type RetryOptions struct {
	// Transient reports whether an error is worth another try (the gRPC
	// store's: client.Transient). Required.
	Transient func(error) bool
	// Retries is how many times a call failing with a transient error is
	// tried again (default 5; negative: never).
	Retries int
	// Delay is the wait before the first retry (default 200 ms), doubled
	// after each one up to MaxDelay (default 5 s).
	Delay, MaxDelay time.Duration
}

// withDefaults fills in the defaults and checks o.
func (o RetryOptions) withDefaults() (RetryOptions, error) {
	if o.Transient == nil {
		return o, fmt.Errorf("%w: retry options: no Transient classifier", castore.ErrInvalid)
	}
	if o.Retries == 0 {
		o.Retries = 5
	}
	if o.Delay <= 0 {
		o.Delay = 200 * time.Millisecond
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = 5 * time.Second
	}
	if o.MaxDelay < o.Delay {
		o.MaxDelay = o.Delay
	}
	return o, nil
}

// Retrying returns s with every read tried again, with exponential
// backoff, while it fails with an error o.Transient accepts, up to
// o.Retries times; the last error is returned wrapped with the count of
// tries. Other errors (castore.ErrNotFound, ErrCorrupt) and a done
// context end the tries at once. Reads are idempotent, so retrying is
// safe; a retried GetChunk appends to dst afresh (a failed try may have
// written past len(dst), which the caller does not own). Powers of s are found
// below it with castore.As, not retried.
func Retrying(s castore.ReadStore, o RetryOptions) (castore.ReadStore, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	return retrying{s, o}, nil
}

type retrying struct {
	r castore.ReadStore
	o RetryOptions
}

func (r retrying) Unwrap() any { return r.r }

// Retry calls fn until it succeeds, fails with an error that is not
// transient (by o.Transient), ctx is done, or it has been tried
// 1+o.Retries times. what names the call in the error.
func Retry(ctx context.Context, o RetryOptions, what string, fn func() error) error {
	o, err := o.withDefaults()
	if err != nil {
		return err
	}
	return retry(ctx, o, func() string { return what }, fn)
}

// retry is Retry with o's defaults filled in and the call named only
// when an error needs the name.
func retry(ctx context.Context, o RetryOptions, what func() string, fn func() error) error {
	delay := o.Delay
	for attempt := 0; ; attempt++ {
		err := fn()
		if err == nil || !o.Transient(err) || ctx.Err() != nil {
			return err
		}
		if attempt >= o.Retries {
			return fmt.Errorf("%s: failed %d times: %w", what(), attempt+1, err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w (after %w)", what(), ctx.Err(), err)
		case <-t.C:
		}
		delay = min(2*delay, o.MaxDelay)
	}
}

func (r retrying) HasChunk(ctx context.Context, d castore.Digest) (ok bool, err error) {
	err = retry(ctx, r.o, func() string { return "has chunk " + d.String() }, func() (err error) {
		ok, err = r.r.HasChunk(ctx, d)
		return err
	})
	return ok, err
}

func (r retrying) GetChunk(ctx context.Context, d castore.Digest, dst []byte) ([]byte, error) {
	out := dst
	err := retry(ctx, r.o, func() string { return "get chunk " + d.String() }, func() (err error) {
		out, err = r.r.GetChunk(ctx, d, dst)
		return err
	})
	if err != nil {
		return dst, err
	}
	return out, nil
}

func (r retrying) GetBlobIndex(ctx context.Context, d castore.Digest) (refs []castore.ChunkRef, err error) {
	err = retry(ctx, r.o, func() string { return "get blob index " + d.String() }, func() (err error) {
		refs, err = r.r.GetBlobIndex(ctx, d)
		return err
	})
	return refs, err
}

func (r retrying) GetDirectory(ctx context.Context, d castore.Digest) (dir *castore.Directory, err error) {
	err = retry(ctx, r.o, func() string { return "get directory " + d.String() }, func() (err error) {
		dir, err = r.r.GetDirectory(ctx, d)
		return err
	})
	return dir, err
}
