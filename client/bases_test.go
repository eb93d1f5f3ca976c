package client

import "testing"

func TestFamily(t *testing.T) {
	for _, c := range []struct{ name, want string }{
		{"go-1.22.0", "go"},
		{"go-1.22.1", "go"},
		{"go-1.22.0-doc", "go-doc"},
		{"python3.11-numpy-1.26.4", "python3.11-numpy"},
		{"linux-6.6.1-modules", "linux-modules"},
		{"hello", "hello"},
		{"1.0", "1.0"},
		{"source", "source"},
		{"glibc-2.38-44-bin", "glibc-bin"},
	} {
		if got := Family(c.name); got != c.want {
			t.Errorf("Family(%q) = %q, want %q", c.name, got, c.want)
		}
	}
}
