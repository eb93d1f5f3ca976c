package testpg

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestNew gets two databases of one server and checks they are separate.
func TestNew(t *testing.T) {
	ctx := context.Background()
	a, b := New(t), New(t)
	if a == b {
		t.Fatalf("two databases with one URL %s", a)
	}
	if err := exec1(ctx, a, "CREATE TABLE x (k bytea PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 'x'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("table of database %s seen in %s", a, b)
	}
}
