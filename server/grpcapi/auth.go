package grpcapi

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/nixcas/nixcas/server/auth"
)

// authorizer checks bearer tokens with the server's auth.Checker.
type authorizer struct {
	c *auth.Checker
}

// check authorizes a call of fullMethod.
func (a authorizer) check(ctx context.Context, fullMethod string) error {
	token, present := callToken(ctx)
	err := a.c.Check(isWrite(fullMethod), token, present)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, auth.ErrTokenRequired):
		return status.Error(codes.Unauthenticated, err.Error())
	}
	return status.Error(codes.PermissionDenied, err.Error())
}

// callToken returns the bearer token of the call's "authorization"
// metadata; a call without one, or with another scheme, has none.
func callToken(ctx context.Context) (string, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return "", false
	}
	v := vals[0]
	if len(v) < 7 || !strings.EqualFold(v[:7], "Bearer ") {
		return "", false
	}
	return strings.TrimSpace(v[7:]), true
}

func (a authorizer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (a authorizer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := a.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}
