// Package s3objects keeps a store's frames in S3-compatible object
// storage (AWS S3, MinIO, Garage, ...): it is a pebblestore.ObjectStore
// whose objects are keys of one bucket under one prefix.
//
// A store is configured by a URL:
//
//	s3://BUCKET[/PREFIX][?KEY=VALUE&...]
//
// with these query keys, each at most once; any other key is an error:
//
//	endpoint=HOST[:PORT]   the S3 service (default s3.amazonaws.com)
//	region=NAME            the bucket's region (default: asked of the service)
//	tls=true|false         HTTPS or plain HTTP (default true)
//	addressing=path|virtual
//	                       path-style (https://HOST/BUCKET/KEY) or
//	                       virtual-hosted (https://BUCKET.HOST/KEY) requests;
//	                       default virtual without an endpoint (AWS), path
//	                       with one (MinIO, Garage)
//	part-size=BYTES        objects larger than this are uploaded in parts of
//	                       this size (multipart upload); at least 5 MiB,
//	                       default 16 MiB; suffixes K, M, G (powers of 1024)
//	retries=N              attempts per request, the first included (default 3)
//
// Credentials never appear in the URL (one with a user name or password is
// refused): they come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
// (with AWS_SESSION_TOKEN for temporary ones), else from the AWS shared
// credentials file (AWS_SHARED_CREDENTIALS_FILE, default
// ~/.aws/credentials, profile AWS_PROFILE, default "default").
//
// Object NAME is stored under the key PREFIX/NA/NAME (NA: its first two
// characters), as DirObjects lays out its files. A put is one PUT, or a
// multipart upload above the part size; it is durable when it returns, so
// SyncObjects does nothing. Putting an object again replaces it with the
// same bytes (names are digests). Reads ask for byte ranges. Keys under
// the prefix that do not have this layout are never listed, read or
// deleted; but a prefix belongs to one store: a store deletes the frames
// under its prefix that its index does not name when it opens.
//
// Errors: a missing object is castore.ErrNotFound; a service that cannot
// be reached, times out, or answers with a server error (5xx, throttling)
// is castore.ErrUnavailable, after the retries. A read returns all the
// bytes asked for or an error, never fewer.
//
// A Store counts its requests, bytes and errors by operation for
// Prometheus: it is a prometheus.Collector.
package s3objects
