package httpcache

import "net/http"

// OpenSourceWith is OpenSource with the HTTP client an http(s) source
// makes its requests with (to send credentials, say); other sources
// ignore it.
func OpenSourceWith(loc string, c *http.Client) (Source, error) {
	src, err := OpenSource(loc)
	if err != nil {
		return nil, err
	}
	if hs, ok := src.(*httpSource); ok && c != nil {
		hs.client = c
	}
	return src, nil
}
