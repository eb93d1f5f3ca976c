package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
)

// Errors Check returns; see the package documentation.
var (
	ErrTokenRequired  = errors.New("token required")
	ErrWrongToken     = errors.New("wrong token")
	ErrWritesDisabled = errors.New("uploads are disabled")
)

// Policy is what a server accepts. Its zero value lets everyone read and
// write.
type Policy struct {
	// PushToken, when set, is the token writes need; it opens reads too.
	PushToken string
	// ReadToken, when set, is the token reads need. With a read token and
	// no push token, writes are refused.
	ReadToken string
	// RefuseAnonymousWrites refuses writes when no push token is set.
	RefuseAnonymousWrites bool
}

// WritesOpen reports whether anyone may write, without a token.
func (p Policy) WritesOpen() bool {
	return p.PushToken == "" && p.ReadToken == "" && !p.RefuseAnonymousWrites
}

// WritesRefused reports whether every write is refused, whatever the token.
func (p Policy) WritesRefused() bool {
	return p.PushToken == "" && !p.WritesOpen()
}

// Checker applies a Policy. It keeps the tokens as SHA-256 digests, so that
// a comparison takes the same time whatever the token given. It is safe for
// concurrent use.
type Checker struct {
	p          Policy
	push, read [sha256.Size]byte
}

// New returns the checker of p.
func New(p Policy) *Checker {
	return &Checker{p: p, push: sha256.Sum256([]byte(p.PushToken)), read: sha256.Sum256([]byte(p.ReadToken))}
}

// Policy returns the policy c applies.
func (c *Checker) Policy() Policy { return c.p }

// Check decides a request: write tells whether it changes the store, token
// is the token it carries and present whether it carries one at all. It
// returns nil when the request may go on, else one of the package's errors
// (wrapped, with the reason).
func (c *Checker) Check(write bool, token string, present bool) error {
	need := c.p.ReadToken != ""
	if write {
		if c.p.PushToken == "" {
			switch {
			case c.p.ReadToken != "":
				return fmt.Errorf("%w: no push token is set, and a read token is", ErrWritesDisabled)
			case c.p.RefuseAnonymousWrites:
				return fmt.Errorf("%w: no push token is set and anonymous writes are not allowed", ErrWritesDisabled)
			}
			return nil
		}
		need = true
	}
	if !need {
		return nil
	}
	if !present {
		return ErrTokenRequired
	}
	// Both comparisons always run, each in constant time.
	h := sha256.Sum256([]byte(token))
	isPush := subtle.ConstantTimeCompare(h[:], c.push[:]) == 1 && c.p.PushToken != ""
	isRead := subtle.ConstantTimeCompare(h[:], c.read[:]) == 1 && c.p.ReadToken != ""
	switch {
	case isPush:
		return nil
	case isRead && !write:
		return nil
	case isRead:
		return fmt.Errorf("%w: the read token does not allow writes", ErrWrongToken)
	}
	return ErrWrongToken
}
