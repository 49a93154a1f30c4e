package wechat

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckSecretFile(t *testing.T) {
	tests := []struct {
		name          string
		dirMode, mode os.FileMode
		wantErr       string
	}{
		{"owner only", 0o700, 0o600, ""},
		{"Kubernetes Secret: group-readable in a sticky world-writable root", os.ModeSticky | 0o777, 0o440, ""},
		{"readable by everyone", 0o755, 0o644, "mode 0644"},
		{"writable by everyone", 0o755, 0o666, "mode 0666"},
		{"directory anyone may write", 0o777, 0o600, "anyone may replace it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "m")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, "apiclient_key.pem")
			if err := os.WriteFile(p, []byte("-----BEGIN PRIVATE KEY-----secret"), 0o600); err != nil {
				t.Fatal(err)
			}
			// Chmod, not the umask-filtered create modes.
			if err := os.Chmod(p, tt.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tt.dirMode); err != nil {
				t.Fatal(err)
			}
			err := CheckSecretFile(p)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("CheckSecretFile = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("CheckSecretFile = %v, want %q", err, tt.wantErr)
			case err != nil && strings.Contains(err.Error(), "secret\""):
				t.Errorf("error quotes the content: %v", err)
			}
		})
	}
}
