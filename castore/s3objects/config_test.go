package s3objects_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/s3objects"
)

func TestParseURL(t *testing.T) {
	valid := []struct {
		url  string
		want s3objects.Config
	}{
		{"s3://bucket", s3objects.Config{Bucket: "bucket", TLS: true}},
		{"s3://bucket/", s3objects.Config{Bucket: "bucket", TLS: true}},
		{"s3://my-bucket/a/b/", s3objects.Config{Bucket: "my-bucket", Prefix: "a/b/", TLS: true}},
		{"s3://bucket/frames?region=eu-west-1", s3objects.Config{Bucket: "bucket", Prefix: "frames/", Region: "eu-west-1", TLS: true}},
		{"s3://b.example/p?endpoint=127.0.0.1:9000&tls=false&addressing=path",
			s3objects.Config{Bucket: "b.example", Prefix: "p/", Endpoint: "127.0.0.1:9000", Addressing: s3objects.AddressPath}},
		{"s3://bucket?endpoint=garage.local:3900&region=garage&addressing=virtual&part-size=64M&retries=5",
			s3objects.Config{Bucket: "bucket", Endpoint: "garage.local:3900", Region: "garage", TLS: true, Addressing: s3objects.AddressVirtual, PartSize: 64 << 20, Retries: 5}},
		{"s3://bucket?endpoint=minio&tls=true&part-size=5242880", s3objects.Config{Bucket: "bucket", Endpoint: "minio", TLS: true, PartSize: 5 << 20}},
	}
	for _, tt := range valid {
		got, err := s3objects.ParseURL(tt.url)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tt.url, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseURL(%q) = %+v, want %+v", tt.url, got, tt.want)
		}
		// String gives a URL that reads back the same.
		if again, err := s3objects.ParseURL(got.String()); err != nil || again != got {
			t.Errorf("ParseURL(%q.String() = %q) = %+v, %v", tt.url, got.String(), again, err)
		}
	}

	invalid := []struct{ url, says string }{
		{"", `scheme ""`},
		{"http://bucket/p", `scheme "http"`},
		{"s3:bucket", "want s3://BUCKET/PREFIX"},
		{"s3:///prefix", "no bucket"},
		{"s3://Bad_Bucket/p", `bucket "Bad_Bucket"`},
		{"s3://ab/p", `bucket "ab"`},
		{"s3://key:secret@bucket/p", "credentials in the URL"},
		{"s3://bucket/p#frag", "fragment"},
		{"s3://bucket/a//b", "empty, . or .. segment"},
		{"s3://bucket/a/../b", "empty, . or .. segment"},
		{"s3://bucket?endpiont=x", `unknown query key "endpiont"`},
		{"s3://bucket?tls=yes", `tls="yes"`},
		{"s3://bucket?tls=true&tls=false", `"tls" given 2 times`},
		{"s3://bucket?addressing=dns", `addressing="dns"`},
		{"s3://bucket?endpoint=", `endpoint ""`},
		{"s3://bucket?endpoint=http://host:9000", `endpoint "http://host:9000"`},
		{"s3://bucket?endpoint=host:99999", `port "99999"`},
		{"s3://bucket?endpoint=host:x", `port "x"`},
		{"s3://bucket?region=", "empty region"},
		{"s3://bucket?part-size=1M", `part-size="1M"`},
		{"s3://bucket?part-size=lots", `part-size="lots"`},
		{"s3://bucket?part-size=6G", `part-size="6G"`},
		{"s3://bucket?retries=0", `retries="0"`},
		{"s3://bucket?retries=x", `retries="x"`},
		{"s3://bucket?%zz", "query"},
	}
	for _, tt := range invalid {
		_, err := s3objects.ParseURL(tt.url)
		if !errors.Is(err, castore.ErrInvalid) || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("ParseURL(%q) = %v, want ErrInvalid saying %q", tt.url, err, tt.says)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("ParseURL(%q) repeats the secret: %v", tt.url, err)
		}
	}
}
