package entities

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// The types below complete the built-in domain so it follows GARM's current
// entity list: a GARM client's filter may name any of them. Their columns
// follow GARM's database models (cloudbase/garm, database/sql) where those
// say what a row holds, with the conventions of builtin.go: plural snake_case
// tables, defaults so plain SQL can write rows, and keys of the same kind
// GARM uses (GARM numbers scale sets, templates, file objects and proxies,
// and gives forge instances a uuid). The secret marks, and why each column
// is or is not secret, are listed in docs/security.md.

// ScaleSet is a GitHub runner scale set: like a pool, but targeted by name
// and scaled by GitHub's scale set API. It holds no secret column: GARM
// keeps the scale set's message-queue session token in memory, never in the
// row.
type ScaleSet struct {
	ID                     int64           `json:"id" gorm:"primaryKey"`
	ScaleSetID             int64           `json:"scale_set_id" gorm:"not null;default:0"`
	Name                   string          `json:"name" gorm:"not null;default:''"`
	State                  string          `json:"state" gorm:"not null;default:'pending'"`
	ExtendedState          string          `json:"extended_state" gorm:"not null;default:''"`
	ProviderName           string          `json:"provider_name" gorm:"not null;default:''"`
	RunnerPrefix           string          `json:"runner_prefix" gorm:"not null;default:'garm'"`
	MaxRunners             int64           `json:"max_runners" gorm:"not null;default:0"`
	MinIdleRunners         int64           `json:"min_idle_runners" gorm:"not null;default:0"`
	DesiredRunnerCount     int64           `json:"desired_runner_count" gorm:"not null;default:0"`
	RunnerBootstrapTimeout int64           `json:"runner_bootstrap_timeout" gorm:"not null;default:20"`
	Image                  string          `json:"image" gorm:"not null;default:''"`
	Flavor                 string          `json:"flavor" gorm:"not null;default:''"`
	OSType                 string          `json:"os_type" gorm:"column:os_type;not null;default:'linux'"`
	OSArch                 string          `json:"os_arch" gorm:"column:os_arch;not null;default:'amd64'"`
	Enabled                bool            `json:"enabled" gorm:"not null;default:true"`
	DisableUpdate          bool            `json:"disable_update" gorm:"not null;default:false"`
	LastMessageID          int64           `json:"last_message_id" gorm:"not null;default:0"`
	ExtraSpecs             json.RawMessage `json:"extra_specs" gorm:"type:jsonb;not null;default:'{}'"`
	GitHubRunnerGroup      string          `json:"github_runner_group" gorm:"column:github_runner_group;not null;default:''"`
	RepoID                 *uuid.UUID      `json:"repo_id" gorm:"type:uuid"`
	OrgID                  *uuid.UUID      `json:"org_id" gorm:"type:uuid"`
	EnterpriseID           *uuid.UUID      `json:"enterprise_id" gorm:"type:uuid"`
	TemplateID             *int64          `json:"template_id"`
	CreatedAt              time.Time       `json:"created_at" gorm:"type:timestamptz;not null;default:now()"`
	UpdatedAt              time.Time       `json:"updated_at" gorm:"type:timestamptz;not null;default:now()"`
}

// GiteaCredentials holds what GARM uses to talk to a Gitea instance: an
// access token, in Payload (secret), as GitHubCredentials does for GitHub.
type GiteaCredentials struct {
	ID           uuid.UUID       `json:"id" gorm:"type:uuid;primaryKey;default:gen_random_uuid()"`
	Name         string          `json:"name" gorm:"not null;default:''"`
	Description  string          `json:"description" gorm:"not null;default:''"`
	AuthType     string          `json:"auth_type" gorm:"not null;default:'pat'"`
	EndpointName string          `json:"endpoint_name" gorm:"not null;default:''"`
	Payload      json.RawMessage `json:"payload" gorm:"type:jsonb;not null;default:'{}'" changecast:"secret"`
	CreatedAt    time.Time       `json:"created_at" gorm:"type:timestamptz;not null;default:now()"`
	UpdatedAt    time.Time       `json:"updated_at" gorm:"type:timestamptz;not null;default:now()"`
}

// Template is a runner install template: the script a new runner runs to
// bootstrap itself, for one OS and forge. Data is secret: operators put
// registry logins, proxy passwords and tokens in these scripts, under names
// no rule can recognise, and changecast cannot tell a script that holds
// none from one that does.
type Template struct {
	ID          int64      `json:"id" gorm:"primaryKey"`
	Name        string     `json:"name" gorm:"not null;default:''"`
	Description string     `json:"description" gorm:"not null;default:''"`
	OSType      string     `json:"os_type" gorm:"column:os_type;not null;default:'linux'"`
	ForgeType   string     `json:"forge_type" gorm:"not null;default:'github'"`
	Data        string     `json:"data" gorm:"not null;default:''" changecast:"secret"`
	UserID      *uuid.UUID `json:"user_id" gorm:"type:uuid"`
	CreatedAt   time.Time  `json:"created_at" gorm:"type:timestamptz;not null;default:now()"`
	UpdatedAt   time.Time  `json:"updated_at" gorm:"type:timestamptz;not null;default:now()"`
}

// FileObject is a file in GARM's object store (runner agent binaries,
// tools, anything an operator uploads). Content is secret: it is whatever
// was uploaded (a kubeconfig or a key as easily as a binary), changecast
// cannot inspect it, and it can be megabytes; clients see the name, size and
// SHA-256 and fetch the bytes from GARM.
type FileObject struct {
	ID          int64     `json:"id" gorm:"primaryKey"`
	Name        string    `json:"name" gorm:"not null;default:''"`
	Description string    `json:"description" gorm:"not null;default:''"`
	FileType    string    `json:"file_type" gorm:"not null;default:''"`
	Size        int64     `json:"size" gorm:"not null;default:0"`
	SHA256      string    `json:"sha256" gorm:"column:sha256;not null;default:''"`
	Tags        []string  `json:"tags" gorm:"type:text[];not null;default:'{}'"`
	Content     []byte    `json:"content" gorm:"type:bytea" changecast:"secret"`
	CreatedAt   time.Time `json:"created_at" gorm:"type:timestamptz;not null;default:now()"`
	UpdatedAt   time.Time `json:"updated_at" gorm:"type:timestamptz;not null;default:now()"`
}

// ForgeInstance is a whole forge (a Gitea instance) that runners serve,
// the way an enterprise is for GitHub. Its webhook secret is secret.
type ForgeInstance struct {
	ID                       uuid.UUID  `json:"id" gorm:"type:uuid;primaryKey;default:gen_random_uuid()"`
	EndpointName             string     `json:"endpoint_name" gorm:"not null;default:''"`
	GiteaCredentialsID       *uuid.UUID `json:"gitea_credentials_id" gorm:"type:uuid" changecast:"public"`
	PoolManagerRunning       bool       `json:"pool_manager_running" gorm:"not null;default:false"`
	PoolManagerFailureReason string     `json:"pool_manager_failure_reason" gorm:"not null;default:''"`
	PoolBalancerType         string     `json:"pool_balancer_type" gorm:"not null;default:'roundrobin'"`
	AgentMode                bool       `json:"agent_mode" gorm:"not null;default:false"`
	WebhookSecret            string     `json:"webhook_secret" gorm:"not null;default:''" changecast:"secret"`
	CreatedAt                time.Time  `json:"created_at" gorm:"type:timestamptz;not null;default:now()"`
	UpdatedAt                time.Time  `json:"updated_at" gorm:"type:timestamptz;not null;default:now()"`
}

// Proxy is an HTTP proxy that runners use. HTTPProxy and HTTPSProxy are
// secret as well as Credentials: a proxy URL may carry a user and password
// (http://user:pass@proxy:3128), and sanitize strips whole columns, so the
// URL cannot leave with its password cut out. NoProxy (host names) is kept.
type Proxy struct {
	ID          int64           `json:"id" gorm:"primaryKey"`
	Name        string          `json:"name" gorm:"not null;default:''"`
	Description string          `json:"description" gorm:"not null;default:''"`
	HTTPProxy   string          `json:"http_proxy" gorm:"column:http_proxy;not null;default:''" changecast:"secret"`
	HTTPSProxy  string          `json:"https_proxy" gorm:"column:https_proxy;not null;default:''" changecast:"secret"`
	NoProxy     string          `json:"no_proxy" gorm:"column:no_proxy;not null;default:''"`
	Credentials json.RawMessage `json:"credentials" gorm:"type:jsonb;not null;default:'{}'" changecast:"secret"`
	CreatedAt   time.Time       `json:"created_at" gorm:"type:timestamptz;not null;default:now()"`
	UpdatedAt   time.Time       `json:"updated_at" gorm:"type:timestamptz;not null;default:now()"`
}

func (ScaleSet) TableName() string         { return "scalesets" }
func (GiteaCredentials) TableName() string { return "gitea_credentials" }
func (Template) TableName() string         { return "templates" }
func (FileObject) TableName() string       { return "file_objects" }
func (ForgeInstance) TableName() string    { return "forge_instances" }
func (Proxy) TableName() string            { return "proxies" }
