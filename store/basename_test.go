package store_test

import (
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/storepath"

	"github.com/nixcas/nixcas/store"
)

// TestValidateBaseName: valid and invalid base names side by side, as
// Nix judges them (a hash of exactly 32 nixbase32 characters, '-', a name
// of at most 211 characters not starting with '.'); every name accepted is
// accepted by go-nix's storepath too, which is laxer (it takes an empty
// name, or a 33rd hash character as the name's first).
func TestValidateBaseName(t *testing.T) {
	const h = "0c8kh6llm1yz8nrq0d6hb6ydcqdbk0wj"
	for _, tc := range []struct {
		s  string
		ok bool
	}{
		{h + "-hello-2.12", true},
		{h + "-a", true},
		{h + "-x+y_z?w=v-1.0", true},
		{h + "-" + strings.Repeat("n", 211), true},
		{"00000000000000000000000000000000-zero", true},
		{"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-all-z", true},
		{h + "-foo.drv", true},
		{h + "-" + strings.Repeat("n", 212), false},
		{h + "-", false},
		{h, false},
		{h + "x-name", false},
		{h[:31] + "-name", false},
		{h[:31] + "e-name", false}, // e, o, t, u are not nixbase32
		{h[:31] + "o-name", false},
		{h[:31] + "t-name", false},
		{h[:31] + "u-name", false},
		{h[:31] + "A-name", false},
		{h + "-.hidden", false},
		{h + "-..", false},
		{h + "-a/b", false},
		{h + "-a b", false},
		{h + "-caf\xc3\xa9", false},
		{"", false},
		{"/nix/store/" + h + "-abs", false},
	} {
		err := store.ValidateBaseName(tc.s)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateBaseName(%q) = %v, want ok %v", tc.s, err, tc.ok)
		}
		if err == nil {
			if _, gerr := storepath.FromString(tc.s); gerr != nil {
				t.Errorf("%q: accepted, but storepath.FromString says %v", tc.s, gerr)
			}
		}
	}
}
