select account_id, name, industry, employees
from {{ ref('raw_accounts') }}
