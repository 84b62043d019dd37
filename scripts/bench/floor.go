package main

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// The floor is a bare grpc-go server that answers every method with a
// constant message of the size a real answer has, touching no database:
// what the transport alone costs, on both sides, at this concurrency. No
// implementation of the API can go faster on this machine. It runs as a
// process of its own (this program, started with floorArg).
const floorArg = "floor-server"

// floorServer's answers are built once; each call returns the same one.
type floorServer struct {
	usersv1.UnimplementedUsersServiceServer
	user   *usersv1.User
	batch  *usersv1.BatchGetUsersResponse
	search *usersv1.SearchUsersResponse
	page   *usersv1.ListUsersResponse
	token  *usersv1.APIToken
}

func newFloorServer() *floorServer {
	// A user like a seeded one (keys.go), as the service would return it.
	at := timestamppb.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	user := &usersv1.User{
		Meta:        &usersv1.EntityMeta{Id: identityID(123456), CreatedAt: at, UpdatedAt: at},
		OidcSubject: subject(123456),
		Name:        "Bench User 123456",
		Email:       "user123456@bench.example",
		PhotoUrl:    "https://bench.example/photos/123456.png",
		Username:    username(123456),
	}
	batch := &usersv1.BatchGetUsersResponse{}
	for range batchSize {
		batch.Users = append(batch.Users, user)
	}
	search := &usersv1.SearchUsersResponse{}
	for range searchLimit {
		search.Users = append(search.Users, &usersv1.UserDirectoryEntry{
			IdentityId: user.Meta.Id, Username: user.Username, Name: user.Name, PhotoUrl: user.PhotoUrl,
		})
	}
	page := &usersv1.ListUsersResponse{NextPageToken: pageToken(123456)}
	for range listPageSize {
		page.Users = append(page.Users, user)
	}
	// Seeded user 123456's token, as a resolve returns it: just used.
	token := &usersv1.APIToken{
		Id: user.Meta.Id, IdentityId: user.Meta.Id, Name: tokenName(123456), TokenPrefix: tokenPrefix(123456),
		CreatedAt: at, LastUsedAt: at,
	}
	return &floorServer{user: user, batch: batch, search: search, page: page, token: token}
}

// floorMain serves the floor on $GRPC_ADDRESS until SIGTERM.
func floorMain() int {
	return serve(func(s *grpc.Server) {
		usersv1.RegisterUsersServiceServer(s, newFloorServer())
	})
}

func (f *floorServer) ResolveOrCreateUser(context.Context, *usersv1.ResolveOrCreateUserRequest) (*usersv1.ResolveOrCreateUserResponse, error) {
	return &usersv1.ResolveOrCreateUserResponse{User: f.user}, nil
}

func (f *floorServer) GetUser(context.Context, *usersv1.GetUserRequest) (*usersv1.GetUserResponse, error) {
	return &usersv1.GetUserResponse{User: f.user}, nil
}

func (f *floorServer) GetUserByOIDCSubject(context.Context, *usersv1.GetUserByOIDCSubjectRequest) (*usersv1.GetUserByOIDCSubjectResponse, error) {
	return &usersv1.GetUserByOIDCSubjectResponse{User: f.user}, nil
}

func (f *floorServer) BatchGetUsers(context.Context, *usersv1.BatchGetUsersRequest) (*usersv1.BatchGetUsersResponse, error) {
	return f.batch, nil
}

func (f *floorServer) UpdateUser(context.Context, *usersv1.UpdateUserRequest) (*usersv1.UpdateUserResponse, error) {
	return &usersv1.UpdateUserResponse{User: f.user}, nil
}

func (f *floorServer) GetMe(context.Context, *usersv1.GetMeRequest) (*usersv1.GetMeResponse, error) {
	return &usersv1.GetMeResponse{User: f.user}, nil
}

func (f *floorServer) SearchUsers(context.Context, *usersv1.SearchUsersRequest) (*usersv1.SearchUsersResponse, error) {
	return f.search, nil
}

func (f *floorServer) ListUsers(context.Context, *usersv1.ListUsersRequest) (*usersv1.ListUsersResponse, error) {
	return f.page, nil
}

func (f *floorServer) ResolveAPIToken(context.Context, *usersv1.ResolveAPITokenRequest) (*usersv1.ResolveAPITokenResponse, error) {
	return &usersv1.ResolveAPITokenResponse{IdentityId: f.token.IdentityId, Token: f.token}, nil
}
