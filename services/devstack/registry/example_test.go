package registry_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/tidestream/tidestream/services/devstack/registry"
)

// A test serves the registry with httptest and talks to it with sr.Client,
// as the encoder does; BACKWARD is enforced without any interceptor.
func Example() {
	reg, err := registry.New(registry.Config{})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(reg)
	defer srv.Close()
	cl, err := sr.NewClient(sr.URLs(srv.URL), sr.HTTPClient(srv.Client()))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	v1 := sr.Schema{Schema: `{"type":"record","name":"t","fields":[{"name":"id","type":"int"}]}`}
	v2 := sr.Schema{Schema: `{"type":"record","name":"t","fields":[{"name":"id","type":"int"},{"name":"c","type":"string"}]}`}
	id, err := cl.RegisterSchema(ctx, "t-value", v1, -1, -1)
	fmt.Println(id, err)
	_, err = cl.RegisterSchema(ctx, "t-value", v2, -1, -1)
	fmt.Println(err.(*sr.ResponseError).ErrorCode)
	// Output:
	// 1 <nil>
	// 409
}
