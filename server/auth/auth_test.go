package auth_test

import (
	"errors"
	"testing"

	"github.com/nixcas/nixcas/server/auth"
)

func TestCheck(t *testing.T) {
	const push, read = "push-secret", "read-secret"
	open := auth.Policy{}
	pushOnly := auth.Policy{PushToken: push}
	readOnly := auth.Policy{ReadToken: read}
	both := auth.Policy{PushToken: push, ReadToken: read}
	public := auth.Policy{RefuseAnonymousWrites: true}
	publicPush := auth.Policy{PushToken: push, RefuseAnonymousWrites: true}
	none := ""
	for _, tc := range []struct {
		name    string
		p       auth.Policy
		write   bool
		token   *string
		want    error
		wantMsg string
	}{
		{"open read", open, false, nil, nil, ""},
		{"open write", open, true, nil, nil, ""},
		{"open write with a token", open, true, ptr("anything"), nil, ""},
		{"push-only read", pushOnly, false, nil, nil, ""},
		{"push-only write without token", pushOnly, true, nil, auth.ErrTokenRequired, "token required"},
		{"push-only write with the push token", pushOnly, true, ptr(push), nil, ""},
		{"push-only write with a wrong token", pushOnly, true, ptr("nope"), auth.ErrWrongToken, "wrong token"},
		{"push-only write with an empty token", pushOnly, true, &none, auth.ErrWrongToken, "wrong token"},
		{"push-only write with the token's prefix", pushOnly, true, ptr(push[:4]), auth.ErrWrongToken, "wrong token"},
		{"read-only read without token", readOnly, false, nil, auth.ErrTokenRequired, "token required"},
		{"read-only read with the read token", readOnly, false, ptr(read), nil, ""},
		{"read-only read with a wrong token", readOnly, false, ptr("nope"), auth.ErrWrongToken, "wrong token"},
		{"read-only write without token", readOnly, true, nil, auth.ErrWritesDisabled, "uploads are disabled: no push token is set, and a read token is"},
		{"read-only write with the read token", readOnly, true, ptr(read), auth.ErrWritesDisabled, "uploads are disabled: no push token is set, and a read token is"},
		{"both read with the push token", both, false, ptr(push), nil, ""},
		{"both read with the read token", both, false, ptr(read), nil, ""},
		{"both write with the read token", both, true, ptr(read), auth.ErrWrongToken, "wrong token: the read token does not allow writes"},
		{"both write with the push token", both, true, ptr(push), nil, ""},
		{"both write without token", both, true, nil, auth.ErrTokenRequired, "token required"},
		{"public read", public, false, nil, nil, ""},
		{"public write", public, true, nil, auth.ErrWritesDisabled, "uploads are disabled: no push token is set and anonymous writes are not allowed"},
		{"public write with a token", public, true, ptr("x"), auth.ErrWritesDisabled, "uploads are disabled: no push token is set and anonymous writes are not allowed"},
		{"public with push token, write", publicPush, true, ptr(push), nil, ""},
		{"public with push token, write without", publicPush, true, nil, auth.ErrTokenRequired, "token required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			token, present := "", tc.token != nil
			if present {
				token = *tc.token
			}
			err := auth.New(tc.p).Check(tc.write, token, present)
			if !errors.Is(err, tc.want) || tc.want == nil && err != nil {
				t.Fatalf("Check: %v, want %v", err, tc.want)
			}
			if err != nil && err.Error() != tc.wantMsg {
				t.Errorf("Check: %q, want %q", err, tc.wantMsg)
			}
		})
	}
}

func TestPolicyWrites(t *testing.T) {
	for _, tc := range []struct {
		p             auth.Policy
		open, refused bool
	}{
		{auth.Policy{}, true, false},
		{auth.Policy{PushToken: "p"}, false, false},
		{auth.Policy{ReadToken: "r"}, false, true},
		{auth.Policy{RefuseAnonymousWrites: true}, false, true},
		{auth.Policy{PushToken: "p", RefuseAnonymousWrites: true}, false, false},
	} {
		if got := tc.p.WritesOpen(); got != tc.open {
			t.Errorf("%+v WritesOpen: %v, want %v", tc.p, got, tc.open)
		}
		if got := tc.p.WritesRefused(); got != tc.refused {
			t.Errorf("%+v WritesRefused: %v, want %v", tc.p, got, tc.refused)
		}
	}
}

func ptr(s string) *string { return &s }
