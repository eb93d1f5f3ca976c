package s3objects

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/nixcas/nixcas/castore"
)

// Addressing is how requests name the bucket.
type Addressing string

const (
	// AddressPath: https://HOST/BUCKET/KEY.
	AddressPath Addressing = "path"
	// AddressVirtual: https://BUCKET.HOST/KEY.
	AddressVirtual Addressing = "virtual"
)

// Defaults of a Config.
const (
	DefaultEndpoint = "s3.amazonaws.com"
	DefaultPartSize = 16 << 20
	DefaultRetries  = 3
	// MinPartSize is the smallest part S3 accepts in a multipart upload
	// (all but the last).
	MinPartSize = 5 << 20
)

// Config says where the objects are. ParseURL makes one; Open fills the
// zero fields with the defaults.
type Config struct {
	Bucket string
	// Prefix is "" or ends in "/".
	Prefix     string
	Endpoint   string // HOST[:PORT]
	Region     string // "": asked of the service
	TLS        bool
	Addressing Addressing
	PartSize   uint64
	Retries    int
}

// queryKeys are the URL query keys ParseURL knows.
var queryKeys = []string{"endpoint", "region", "tls", "addressing", "part-size", "retries"}

// ParseURL reads an s3:// URL (see the package documentation). Errors
// name the part of the URL that is wrong and wrap castore.ErrInvalid.
func ParseURL(raw string) (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("%w: object store URL %q: %s", castore.ErrInvalid, redact(raw), fmt.Sprintf(format, args...))
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("%v", err)
	}
	if u.Scheme != "s3" {
		return bad("scheme %q, want s3://BUCKET/PREFIX", u.Scheme)
	}
	if u.Opaque != "" {
		return bad("want s3://BUCKET/PREFIX")
	}
	if u.User != nil {
		return bad("credentials in the URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or use the AWS shared credentials file")
	}
	if u.Fragment != "" {
		return bad("fragment #%s", u.Fragment)
	}
	c := Config{Bucket: u.Host, TLS: true}
	if c.Bucket == "" {
		return bad("no bucket")
	}
	if err := s3utils.CheckValidBucketNameStrict(c.Bucket); err != nil {
		return bad("bucket %q: %v", c.Bucket, err)
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		for _, seg := range strings.Split(p, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return bad("prefix %q: empty, . or .. segment", p)
			}
		}
		c.Prefix = p + "/"
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("query: %v", err)
	}
	for k, vs := range q {
		known := false
		for _, kk := range queryKeys {
			known = known || k == kk
		}
		if !known {
			return bad("unknown query key %q (known: %s)", k, strings.Join(queryKeys, ", "))
		}
		if len(vs) != 1 {
			return bad("query key %q given %d times", k, len(vs))
		}
	}
	if v, ok := q["endpoint"]; ok {
		c.Endpoint = v[0]
		host, port, err := net.SplitHostPort(c.Endpoint)
		if err != nil {
			host, port = c.Endpoint, ""
		}
		if host == "" || strings.ContainsAny(c.Endpoint, "/?#@ ") {
			return bad("endpoint %q, want HOST or HOST:PORT", c.Endpoint)
		}
		if port != "" {
			if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
				return bad("endpoint %q: port %q", c.Endpoint, port)
			}
		}
	}
	if v, ok := q["region"]; ok {
		if c.Region = v[0]; c.Region == "" {
			return bad("empty region")
		}
	}
	if v, ok := q["tls"]; ok {
		switch v[0] {
		case "true":
			c.TLS = true
		case "false":
			c.TLS = false
		default:
			return bad("tls=%q, want true or false", v[0])
		}
	}
	if v, ok := q["addressing"]; ok {
		switch a := Addressing(v[0]); a {
		case AddressPath, AddressVirtual:
			c.Addressing = a
		default:
			return bad("addressing=%q, want path or virtual", v[0])
		}
	}
	if v, ok := q["part-size"]; ok {
		n, err := parseSize(v[0])
		if err != nil || n < MinPartSize || n > 5<<30 {
			return bad("part-size=%q, want a size from 5M to 5G", v[0])
		}
		c.PartSize = n
	}
	if v, ok := q["retries"]; ok {
		n, err := strconv.Atoi(v[0])
		if err != nil || n < 1 || n > 20 {
			return bad("retries=%q, want 1 to 20", v[0])
		}
		c.Retries = n
	}
	return c, nil
}

// redact drops any user information from a URL that does not parse into
// one, so that an error never repeats a secret.
func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		u.User = url.User("REDACTED")
		return u.String()
	}
	if i := strings.Index(raw, "@"); i >= 0 {
		if j := strings.Index(raw, "://"); j >= 0 && j < i {
			return raw[:j+3] + "REDACTED" + raw[i:]
		}
	}
	return raw
}

// parseSize reads a byte count with an optional K, M or G suffix (powers
// of 1024).
func parseSize(s string) (uint64, error) {
	mult := uint64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, s[:len(s)-1]
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, s[:len(s)-1]
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, s[:len(s)-1]
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > (1<<63)/mult {
		return 0, fmt.Errorf("size %q", s)
	}
	return n * mult, nil
}

// withDefaults fills the zero fields.
func (c Config) withDefaults() Config {
	if c.Addressing == "" {
		if c.Endpoint == "" {
			c.Addressing = AddressVirtual
		} else {
			c.Addressing = AddressPath
		}
	}
	if c.Endpoint == "" {
		c.Endpoint = DefaultEndpoint
	}
	if c.PartSize == 0 {
		c.PartSize = DefaultPartSize
	}
	if c.Retries == 0 {
		c.Retries = DefaultRetries
	}
	return c
}

// String is the configuration as a URL ParseURL reads back.
func (c Config) String() string {
	u := url.URL{Scheme: "s3", Host: c.Bucket, Path: "/" + c.Prefix}
	q := url.Values{}
	if c.Endpoint != "" {
		q.Set("endpoint", c.Endpoint)
	}
	if c.Region != "" {
		q.Set("region", c.Region)
	}
	q.Set("tls", strconv.FormatBool(c.TLS))
	if c.Addressing != "" {
		q.Set("addressing", string(c.Addressing))
	}
	if c.PartSize != 0 {
		q.Set("part-size", strconv.FormatUint(c.PartSize, 10))
	}
	if c.Retries != 0 {
		q.Set("retries", strconv.Itoa(c.Retries))
	}
	u.RawQuery = q.Encode()
	return u.String()
}
