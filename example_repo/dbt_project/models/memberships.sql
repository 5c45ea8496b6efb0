select user_id, account_id, role
from {{ ref('raw_memberships') }}
