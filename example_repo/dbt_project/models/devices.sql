select user_id, token, platform, app_version
from {{ ref('raw_devices') }}
