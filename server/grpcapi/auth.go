package grpcapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// auth checks bearer tokens. Tokens are kept and compared as SHA-256
// digests, so the comparison takes the same time whatever the lengths.
type auth struct {
	push, read       [sha256.Size]byte
	needPush, needRd bool
}

func newAuth(push, read string) *auth {
	a := &auth{needPush: push != "", needRd: read != ""}
	a.push = sha256.Sum256([]byte(push))
	a.read = sha256.Sum256([]byte(read))
	return a
}

// check authorizes a call of fullMethod.
func (a *auth) check(ctx context.Context, fullMethod string) error {
	write := isWrite(fullMethod)
	if write && !a.needPush || !write && !a.needRd {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return status.Error(codes.Unauthenticated, "missing authorization: Bearer token")
	}
	token, ok := strings.CutPrefix(vals[0], "Bearer ")
	if !ok {
		return status.Error(codes.Unauthenticated, "authorization is not a Bearer token")
	}
	h := sha256.Sum256([]byte(token))
	isPush := a.needPush && subtle.ConstantTimeCompare(h[:], a.push[:]) == 1
	isRead := a.needRd && subtle.ConstantTimeCompare(h[:], a.read[:]) == 1
	if isPush || !write && isRead {
		return nil
	}
	return status.Error(codes.PermissionDenied, "token does not allow "+fullMethod)
}

func (a *auth) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (a *auth) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := a.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}
