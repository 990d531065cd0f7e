package upstream

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestConfigValidate(t *testing.T) {
	tlsFiles := TLSConfig{CAPath: "ca.pem", CertPath: "c.pem", KeyPath: "k.pem"}
	for _, tc := range []struct {
		name     string
		cfg      Config
		field    string // "" means valid
		contains string
		urls     []string
	}{
		{name: "url", cfg: Config{PDAddrs: []string{"http://127.0.0.1:2379"}}, urls: []string{"http://127.0.0.1:2379"}},
		{name: "host port", cfg: Config{PDAddrs: []string{"127.0.0.1:2379"}}, urls: []string{"http://127.0.0.1:2379"}},
		{name: "several, spaces, slash", cfg: Config{PDAddrs: []string{" pd-0:2379 ", "http://pd-1:2379/"}},
			urls: []string{"http://pd-0:2379", "http://pd-1:2379"}},
		{name: "ipv6", cfg: Config{PDAddrs: []string{"[::1]:2379"}}, urls: []string{"http://[::1]:2379"}},
		{name: "tls upgrades http", cfg: Config{PDAddrs: []string{"http://pd:2379"}, TLS: tlsFiles}, urls: []string{"https://pd:2379"}},
		{name: "tls https", cfg: Config{PDAddrs: []string{"https://pd:2379"}, TLS: tlsFiles}, urls: []string{"https://pd:2379"}},

		{name: "none", cfg: Config{}, field: "pd", contains: "at least one"},
		{name: "empty entry", cfg: Config{PDAddrs: []string{"pd:2379", " "}}, field: "pd", contains: "empty"},
		{name: "no port", cfg: Config{PDAddrs: []string{"http://pd"}}, field: "pd", contains: "host:port"},
		{name: "bad port", cfg: Config{PDAddrs: []string{"pd:99999"}}, field: "pd", contains: "1..65535"},
		{name: "path", cfg: Config{PDAddrs: []string{"http://pd:2379/pd/api/v1"}}, field: "pd", contains: "nothing after the port"},
		{name: "scheme", cfg: Config{PDAddrs: []string{"grpc://pd:2379"}}, field: "pd", contains: "http or https"},
		{name: "https without tls", cfg: Config{PDAddrs: []string{"https://pd:2379"}}, field: "pd", contains: "--ca"},
		{name: "ca only", cfg: Config{PDAddrs: []string{"pd:2379"}, TLS: TLSConfig{CAPath: "ca.pem"}}, field: "cert"},
		{name: "no ca", cfg: Config{PDAddrs: []string{"pd:2379"}, TLS: TLSConfig{CertPath: "c", KeyPath: "k"}}, field: "ca"},
		{name: "negative timeout", cfg: Config{PDAddrs: []string{"pd:2379"}, DialTimeout: -time.Second}, field: "dial-timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.field == "" {
				require.NoError(t, err)
				require.Equal(t, tc.urls, tc.cfg.urls())
				return
			}
			requireField(t, err, tc.field, tc.contains)
		})
	}
}

func TestDefaults(t *testing.T) {
	require.Equal(t, DefaultDialTimeout, DefaultConfig().DialTimeout)
	cfg := Config{}.withDefaults()
	require.Equal(t, DefaultDialTimeout, cfg.DialTimeout)
	require.NotNil(t, cfg.Logger)
}

func TestTTLSeconds(t *testing.T) {
	for ttl, want := range map[time.Duration]int64{
		-time.Second:            0,
		0:                       0,
		time.Nanosecond:         1,
		time.Second:             1,
		1500 * time.Millisecond: 2,
		24 * time.Hour:          86400,
	} {
		require.Equal(t, want, ttlSeconds(ttl), ttl)
	}
}
