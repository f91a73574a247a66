-- Targets name their KPI by the service's own code ('win_rate'), not by the
-- kpi.v1.Kpi enum number: the API's numbering is the transport's business,
-- and a stored number the build does not know must read as an error, never
-- as some other KPI. The codes are those of `Kpi::code()` in
-- src/domain/kpi.rs; the CHECK keeps anything else out.
ALTER TABLE targets ALTER COLUMN kpi TYPE text USING (CASE kpi
    WHEN 1 THEN 'leads'
    WHEN 2 THEN 'new_customers'
    WHEN 3 THEN 'conversion_rate'
    WHEN 4 THEN 'retention_rate'
    WHEN 5 THEN 'churn_rate'
    WHEN 6 THEN 'nps'
    WHEN 7 THEN 'csat'
    WHEN 8 THEN 'win_rate'
    WHEN 9 THEN 'revenue'
    WHEN 10 THEN 'deals_won'
    WHEN 11 THEN 'average_deal_size'
    WHEN 12 THEN 'sales_cycle_days'
    WHEN 13 THEN 'interactions'
    WHEN 14 THEN 'calls'
    WHEN 15 THEN 'emails'
    WHEN 16 THEN 'meetings'
    WHEN 17 THEN 'first_response_minutes'
    WHEN 18 THEN 'request_resolution_rate'
END);

ALTER TABLE targets ADD CONSTRAINT targets_kpi_code CHECK (kpi IN (
    'leads', 'new_customers', 'conversion_rate', 'retention_rate', 'churn_rate',
    'nps', 'csat', 'win_rate', 'revenue', 'deals_won', 'average_deal_size',
    'sales_cycle_days', 'interactions', 'calls', 'emails', 'meetings',
    'first_response_minutes', 'request_resolution_rate'
));
